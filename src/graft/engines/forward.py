"""Frozen forward passes (feature extraction, and the ImageNet head of `graft predict --imagenet`) in
the engine graft.engines.choice.choose_engine picks, from the options and the machine alone.

Eager PyTorch is slow on CPUs for the depthwise convolutions of mobile backbones: ONNX Runtime's
fp32 extracted features faster than torch's fp32 and than its bf16 autocast on every CPU measured,
with fp32's numbers (docs/benchmarks.md, "Engines", has the figures, the machines and the
commands). So on a CPU a frozen pass runs in ONNX Runtime unless --precision bf16 or
--engine torch was asked; on a GPU, in torch. Torch computes in the runtime's inference precision
(fp32 unless --precision bf16 was asked: graft.runtime.resolve_inference_precision). A module
that cannot be traced runs in torch fp32 under auto, with one warning.

A trained classifier predicts through graft.classifier, whose graph is the run's export (its
backbone's graph plus the head) rather than a trace of the whole network per run.
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
from .choice import choose_engine
from .compile import CompileError, compile_onnx


class Forward(Protocol):
    engine: str  # "torch", "onnxruntime" or "openvino"
    precision: str  # what the numbers are computed in: "32" or "bf16" (torch, when asked)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels (N x 3 x H x W) in; the module's output, float32 on the CPU, out."""
        ...


def engines_folder() -> Path:
    """Where compiled graphs are kept: $GRAFT_CACHE/engines (see graft.runtime.cache_root)."""
    return cache_root() / "engines"


class _TorchForward:
    engine = "torch"

    def __init__(self, module: torch.nn.Module, runtime: Runtime):
        self.module, self.runtime, self.precision = module, runtime, runtime.inference_precision
        self.device = runtime.device
        # Convert outside inference mode: parameters re-created inside it could never train again.
        module.to(device=self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(device=self.device, memory_format=torch.channels_last, non_blocking=True)
        # On the CPU in slices (graft.runtime.PIXELS_PER_RUN): faster and a fraction of the memory;
        # a GPU takes the batch whole.
        parts = pixel_slices(len(pixels), *pixels.shape[-2:]) if self.device.type == "cpu" else [slice(None)]
        with torch.inference_mode(), self.runtime.inference_autocast(self.device):
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
def frozen_forward(module: torch.nn.Module, *, runtime: Runtime, input_size: tuple[int, ...],
                   folder: Path | None = None, log=None) -> Iterator[Forward]:
    """Run `module` (in eval mode, its weights unchanged) in the engine choose_engine picks for
    `runtime` (its engine, device and inference precision), on uint8 pixels of `input_size` (C, H, W);
    its training mode is restored afterwards.

    Compiled graphs are kept in `folder` (default: engines_folder()). Under auto, a module that cannot
    be compiled runs in torch fp32 with one warning on stderr (`log` to send it elsewhere).
    """
    folder = folder or engines_folder()
    was_training = module.training
    module.eval()
    try:
        yield forward_in_engine(module, runtime=runtime, input_size=input_size, folder=folder, log=log)
    finally:
        module.train(was_training)


def forward_in_engine(module: torch.nn.Module, *, runtime: Runtime, input_size: tuple[int, ...],
                      folder: Path | None = None, log=None) -> Forward:
    """`frozen_forward`'s Forward, for a module that stays in eval mode as long as it is used."""
    folder = folder or engines_folder()
    requested = runtime.engine
    engine = choose_engine(requested, device=runtime.device.type, precision=runtime.inference_precision)
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
        say(f"Warning: {error} Running it in PyTorch (fp32) instead.")
        return _TorchForward(module, runtime.but(inference_precision="32"))
