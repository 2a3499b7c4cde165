"""Inference engines for frozen forward passes: PyTorch, ONNX Runtime, OpenVINO (see forward.py)."""

from .compile import CompileError, compile_onnx, trace_onnx
from .forward import AUTO_MIN_IMAGES, ENGINES, Forward, choose_engine, engines_folder, frozen_forward, installed

__all__ = [
    "AUTO_MIN_IMAGES",
    "ENGINES",
    "CompileError",
    "Forward",
    "choose_engine",
    "compile_onnx",
    "engines_folder",
    "frozen_forward",
    "installed",
    "trace_onnx",
]
