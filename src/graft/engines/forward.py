"""Frozen forward passes (feature extraction, predict, evaluate) in the fastest engine the machine has.

Eager PyTorch is slow on CPUs for the depthwise convolutions of mobile backbones. Measured on a
2-core EPYC (AVX-512 with bf16, no AMX), Lite0 at 224 px, batch 32 run in slices of 4, interleaved
rounds: torch fp32 74 img/s, torch bf16 autocast 165, ONNX Runtime fp32 216, OpenVINO fp32 193
(end-to-end extraction: ONNX Runtime 2.39x torch fp32, 1.34x torch bf16); on an AVX2-only EPYC
the issue measured torch 23, ONNX Runtime 67, OpenVINO 76 (`python benchmarks/engines.py`,
docs/benchmarks.md "Engines"). ONNX Runtime answers like fp32 PyTorch (within 1.2e-5), where bf16
moves features by 0.2.

`--engine auto` decides per pass (graft.engines.choice.choose_engine).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..runtime import Runtime, cache_root, pixel_slices, run_in_slices
from .choice import choose_engine, installed
from .compile import CompileError, compile_onnx, compiled_path


class Forward(Protocol):
    engine: str  # "torch", "onnxruntime" or "openvino"
    precision: str  # what the numbers are computed in: "32" or "bf16"

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (N x 3 x H x W) in; the module's output, float32 on the CPU, out."""
        ...


def engines_folder() -> Path:
    """Where compiled graphs are kept: $GRAFT_CACHE/engines (see graft.runtime.cache_root)."""
    return cache_root() / "engines"


def is_compiled(module: torch.nn.Module, input_size: tuple[int, ...], folder: Path) -> bool:
    """Whether ONNX Runtime can run `module` with nothing to trace: its graph is on disk already."""
    return installed("onnxruntime") and compiled_path(module, input_size, folder).exists()


class _TorchForward:
    engine = "torch"

    def __init__(self, module: torch.nn.Module, runtime: Runtime):
        self.module, self.runtime, self.precision = module, runtime, runtime.precision
        self.device = runtime.device
        # Convert outside inference mode: parameters re-created inside it could never train again.
        module.to(device=self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(device=self.device, memory_format=torch.channels_last, non_blocking=True)
        # On the CPU in slices (graft.runtime.PIXELS_PER_RUN): faster and a fraction of the memory;
        # a GPU takes the batch whole.
        parts = pixel_slices(len(pixels), *pixels.shape[-2:]) if self.device.type == "cpu" else [slice(None)]
        with torch.inference_mode(), self.runtime.autocast(self.device):
            outputs = [self.module(pixels[part]).float().cpu() for part in parts]
        return torch.cat(outputs) if len(outputs) != 1 else outputs[0]


def _in_slices(run, pixels: torch.Tensor) -> torch.Tensor:
    """`run` (uint8 numpy batch -> float32 numpy outputs) over `pixels` in slices (graft.runtime.run_in_slices)."""
    return torch.from_numpy(run_in_slices(run, pixels.numpy()))


class _OnnxRuntimeForward:
    engine, precision = "onnxruntime", "32"

    def __init__(self, path: Path):
        from .sliced import SlicedSession

        self.session = SlicedSession(path, threads=torch.get_num_threads())  # the cores torch would use, no more

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session(pixels.numpy()))


class _OpenVinoForward:
    engine, precision = "openvino", "32"

    def __init__(self, path: Path):
        import openvino

        # f32: on CPUs with bf16 OpenVINO would otherwise compute in bf16 and move answers (0.5 on Lite0's features).
        self.model = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return _in_slices(lambda batch: np.asarray(self.model(batch)[0]), pixels)


@contextmanager
def frozen_forward(module: torch.nn.Module, *, runtime: Runtime, images: int, input_size: tuple[int, ...],
                   folder: Path | None = None, log=None) -> Iterator[Forward]:
    """Run `module` (in eval mode, its weights unchanged) in the engine `runtime.engine` picks for a
    pass over `images` images of `input_size` (C, H, W); its training mode is restored afterwards.

    Compiled graphs are kept in `folder` (default: engines_folder()). Under auto, a module that cannot
    be compiled runs in torch with one warning on stderr (`log` to send it elsewhere).
    """
    folder = folder or engines_folder()
    was_training = module.training
    module.eval()
    try:
        yield _forward(module, runtime=runtime, images=images, input_size=input_size, folder=folder, log=log)
    finally:
        module.train(was_training)


def _forward(module: torch.nn.Module, *, runtime: Runtime, images: int, input_size: tuple[int, ...], folder: Path,
             log) -> Forward:
    requested = runtime.engine
    compiled = requested == "auto" and is_compiled(module, input_size, folder)
    engine = choose_engine(requested, device=runtime.device.type, precision=runtime.precision, images=images,
                           compiled=compiled)
    if engine == "torch":
        return _TorchForward(module, runtime)
    load = _OnnxRuntimeForward if engine == "onnxruntime" else _OpenVinoForward
    try:
        path = compile_onnx(module, input_size, folder)
        try:
            return load(path)
        except Exception:  # a damaged file on disk: trace it once more
            path.unlink(missing_ok=True)
            return load(compile_onnx(module, input_size, folder))
    except CompileError as error:
        if requested != "auto":
            raise
        say = log or (lambda message: print(message, file=sys.stderr))
        say(f"Warning: {error} Running it in PyTorch instead.")
        return _TorchForward(module, runtime)
