"""Inference engines for frozen forward passes: PyTorch, ONNX Runtime, OpenVINO (see forward.py).

Names are imported on first use: graft.engines.choice decides without torch, the rest needs it."""

_LAZY = {
    "choose_engine": "graft.engines.choice",
    "installed": "graft.engines.choice",
    "likely_device": "graft.engines.choice",
    "CompileError": "graft.engines.compile",
    "compile_onnx": "graft.engines.compile",
    "trace_onnx": "graft.engines.compile",
    "with_weights": "graft.engines.compile",
    "Forward": "graft.engines.forward",
    "engines_folder": "graft.engines.forward",
    "frozen_forward": "graft.engines.forward",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'graft.engines' has no attribute {name!r}")


__all__ = list(_LAZY)
