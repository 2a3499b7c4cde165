"""Which engine runs a frozen forward pass: decided here alone, from the options and the machine,
without importing torch (so that `graft predict RUN` can choose ONNX Runtime before paying for torch).

The rule, `choose_engine`:
- an explicit `--engine torch|onnxruntime|openvino` is followed (an error when it is not installed);
- under `auto`, on a GPU: torch (its kernels are fast there; graft's graphs run on the CPU);
- under `auto`, on a CPU: torch when `--precision bf16` was asked explicitly (ONNX Runtime computes
  fp32 only), else ONNX Runtime (fp32) where it is installed, else torch fp32.

Why ONNX Runtime on CPUs: on every CPU measured it extracted features faster than eager torch, in
fp32 and in bf16 autocast, with torch fp32's numbers where bf16 moves them; the figures, machines
and commands are in docs/benchmarks.md, "Engines". Neither the number of images nor what the cache
holds enters the rule: the same command gives the same model and the same answers whatever ran
before it (issue 24 found a run's val accuracy moving with whether a graph had been traced). A
network that cannot be traced runs in torch fp32 instead, with a warning (graft.engines.forward),
the same way every time.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from ..errors import GraftError
from ..runtime import ENGINES

PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
# Device files of the GPUs torch uses (NVIDIA; AMD's ROCm): where one exists, torch runs on a GPU.
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd")


def installed(engine: str) -> bool:
    return engine == "torch" or find_spec(PACKAGES[engine]) is not None


def choose_engine(requested: str, *, device: str, precision: str) -> str:
    """The engine that runs frozen forward passes: "torch", "onnxruntime" or "openvino".

    `requested`: --engine (auto, torch, onnxruntime, openvino); `device`: where torch runs ("cpu",
    "cuda": `Runtime.device.type`, or `likely_device()` where torch is not imported); `precision`: the
    inference precision asked for ("32", or "bf16" only when --precision bf16 was given:
    graft.runtime.resolve_inference_precision).
    """
    if requested not in ENGINES:
        raise GraftError(f"--engine {requested!r}: choose one of {', '.join(ENGINES)}.")
    if requested != "auto":
        if not installed(requested):
            raise GraftError(f"--engine {requested}: the {PACKAGES[requested]} package is not installed "
                             f"(pip install {PACKAGES[requested]}), or use --engine auto.")
        return requested
    if device != "cpu" or precision == "bf16" or not installed("onnxruntime"):
        return "torch"
    return "onnxruntime"


def likely_device() -> str:
    """Where torch would run, known without importing torch: "cuda" where a GPU's device file
    exists, else "cpu". (A machine with a GPU but a CPU-only torch is taken for a GPU one: torch
    then predicts, on the CPU.)"""
    return "cuda" if any(Path(device).exists() for device in GPU_DEVICE_FILES) else "cpu"
