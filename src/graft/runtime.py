"""How to run on this machine, decided once: device, precision, workers, batch size, processes.

`Runtime.resolve(...)` turns the user's machine options ("auto" precision, default workers) into
concrete values at the start of a command; everything below takes that one `Runtime` instead of
five loose keywords. The module imports torch only inside the functions that need it, so that
`graft --help` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal

PRECISIONS = ("auto", "32", "bf16")
ENGINES = ("auto", "torch", "onnxruntime", "openvino")  # see graft.engines
# Frozen forward passes on the CPU run a batch in slices of at most this many pixels (4 images at
# 224 px): every intermediate of a run stays in memory at once, and small slices also stay in the
# CPU's caches. For batches of 64 Lite0 images at 224 px, slices of 4 held a fraction of the memory
# in ONNX Runtime at the same speed, and ran eager torch faster in far less memory
# (docs/benchmarks.md, "Batch prediction", "Slices", has the figures and the commits).
PIXELS_PER_RUN = 4 * 224 * 224


def pixel_slices(count: int, height: int, width: int) -> list[slice]:
    """The slices of a batch of `count` images of height x width, each at most PIXELS_PER_RUN pixels
    per image plane (at least one image; one empty slice for an empty batch)."""
    step = max(1, PIXELS_PER_RUN // max(1, height * width))
    return [slice(start, start + step) for start in range(0, max(1, count), step)]


def run_in_slices(run, pixels):
    """`run` (a uint8 numpy batch N x C x H x W -> a numpy output per image) over `pixels` in
    pixel_slices, the outputs concatenated in order."""
    import numpy as np

    outputs = [run(np.ascontiguousarray(pixels[part])) for part in pixel_slices(len(pixels), *pixels.shape[-2:])]
    return np.concatenate(outputs) if len(outputs) != 1 else outputs[0]


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX).

    Without those instructions bf16 is emulated and runs several times slower than fp32 (measured on
    an AVX2-only EPYC: 4 img/s in bf16 against 30 img/s in fp32 for EfficientNet-Lite0).
    `GRAFT_CPU_BF16=0` (or 1) overrides the detection: CI forces the fp32 path with it, so a suite
    written on a bf16 machine is also checked as an AVX2-only machine runs it.
    """
    forced = os.environ.get("GRAFT_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return any(flag in flags for flag in (" amx_bf16", " avx512_bf16"))


@lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """True when the CPU has AMX tile units for bf16 (Sapphire Rapids and later Xeons)."""
    try:
        with open("/proc/cpuinfo") as handle:
            return " amx_bf16" in handle.read()
    except OSError:
        return False


def resolve_precision(precision: str) -> str:
    """The training precision (Lightning's, for the image phase): 'auto' -> 'bf16' where the hardware
    computes it natively, else '32'. Returns '32' or 'bf16'."""
    check_precision(precision)
    if precision != "auto":
        return precision
    import torch

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "32"
    return "bf16" if cpu_has_fast_bf16() else "32"


def resolve_inference_precision(precision: str, engine: str = "auto") -> str:
    """What frozen forward passes (feature extraction, predict, evaluate, serve, the export's parity
    check) compute in: '32', unless --precision bf16 was asked explicitly for an engine that computes
    it (torch: auto picks torch for it, graft.engines.choice). 'auto' means fp32 here: bf16
    autocast moves features enough to change a run's chosen C and val accuracy (issue 24), where
    ONNX Runtime's fp32 is exact and faster on the CPUs measured (docs/benchmarks.md, "Engines")."""
    check_precision(precision)
    return "bf16" if precision == "bf16" and engine in ("auto", "torch") else "32"


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        from .errors import GraftError

        raise GraftError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}.")


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """DataLoader worker processes: one core left to the model's own threads, and none on 2 cores.

    On 2 cores the model's threads already keep both busy and a loader process can only take turns
    with them: extraction ran as fast or slower with 1 worker than decoding between batches in the
    main process (docs/benchmarks.md, "2. Extraction throughput").
    """
    cores = usable_cores()
    return 0 if cores <= 2 else min(8, cores - 1)


def accelerator_device():
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def cache_root() -> Path:
    """The folder of every file graft caches: $GRAFT_CACHE (which `use_cache_dir`, and so
    --cache-dir, sets), else $XDG_CACHE_HOME/graft, else ~/.cache/graft.

    Every cache location asks this one question: the features in features/ (graft.features), the
    traced graphs in engines/ (graft.engines), the runs' ONNX exports in engines/runs/
    (graft.export.cached), the readability memo in checked/ (graft.data.discover)."""
    return Path(os.environ.get("GRAFT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "graft"))


@contextmanager
def use_cache_dir(folder: str | os.PathLike | None) -> Iterator[None]:
    """For its duration, `cache_root()` answers `folder` (made absolute); None changes nothing.

    It sets $GRAFT_CACHE, and puts back the value from before (or its absence) on the way out, so
    the processes started inside inherit the same answer: DDP and sharded-extraction workers,
    DataLoader workers, the export child of graft.export.cached. Its limits follow: it is
    process-wide, not per thread (a thread that runs meanwhile sees `folder` too), and a process
    started inside keeps `folder` after the block ends. Blocks nest; the innermost one decides.
    """
    if folder is None:
        yield
        return
    before = os.environ.get("GRAFT_CACHE")
    os.environ["GRAFT_CACHE"] = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("GRAFT_CACHE", None)
        else:
            os.environ["GRAFT_CACHE"] = before


@dataclass(frozen=True)
class Runtime:
    """The machine settings of one command, resolved: no "auto" and no None left in them.

    - `precision`: what training's image phase computes in (Lightning's bf16-mixed or 32-true): "32"
      or "bf16" (bf16 only where the CPU or GPU computes it natively, or when asked);
    - `inference_precision`: what every frozen forward pass computes in (features, predict,
      evaluate, serve, the export's parity check): "32", or "bf16" only where --precision bf16 was
      asked explicitly (resolve_inference_precision);
    - `workers`: DataLoader processes; `batch_size`: images per batch;
    - `processes`: processes that share feature extraction and train under DDP on one machine
      (`devices` as Lightning names it; a string such as "auto" is passed to Lightning unchanged);
    - `num_nodes`: machines; `progress`: show progress (bars in a terminal, lines elsewhere);
    - `engine`: what runs frozen forward passes: "torch", "onnxruntime", "openvino", or "auto", which
      `graft.engines.choose_engine` decides from the machine and `inference_precision` alone.
    """

    precision: str = "32"
    inference_precision: str = "32"
    workers: int = 0
    batch_size: int = 32
    devices: int | str = 1
    num_nodes: int = 1
    progress: bool = True
    engine: str = "auto"

    @classmethod
    def resolve(
        cls,
        *,
        precision: str = "auto",
        workers: int | None = None,
        batch_size: int = 32,
        devices: int | str = 1,
        num_nodes: int = 1,
        progress: bool = True,
        engine: str = "auto",
    ) -> Runtime:
        from .errors import GraftError

        if engine not in ENGINES:
            raise GraftError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}.")
        if workers is not None and workers < 0:
            raise GraftError(f"--workers {workers}: use 0 (load images in the main process) or more.")
        return cls(precision=resolve_precision(precision), inference_precision=resolve_inference_precision(precision, engine),
                   workers=default_workers() if workers is None else workers, batch_size=batch_size, devices=devices,
                   num_nodes=num_nodes, progress=progress, engine=engine)

    def but(self, **changes) -> Runtime:
        """A copy with some settings changed, e.g. `runtime.but(precision="32", progress=False)`."""
        return replace(self, **changes)

    @property
    def processes(self) -> int:
        """Processes that share feature extraction: the DDP processes on one machine, else 1."""
        return self.devices if isinstance(self.devices, int) and self.num_nodes == 1 else 1

    @property
    def device(self):
        return accelerator_device()

    @property
    def lightning_precision(self) -> Literal["bf16-mixed", "32-true"]:
        return "bf16-mixed" if self.precision == "bf16" else "32-true"

    def autocast(self, device=None):
        """bf16 autocast where this runtime trains in bf16, else nothing (training steps only: frozen
        passes take `inference_autocast`)."""
        return _autocast(self.precision, device or self.device)

    def inference_autocast(self, device=None):
        """bf16 autocast where frozen passes run bf16 (`inference_precision`), else nothing."""
        return _autocast(self.inference_precision, device or self.device)


def _autocast(precision: str, device):
    if precision != "bf16":
        return nullcontext()
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16)
