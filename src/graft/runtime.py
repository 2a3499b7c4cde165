"""Choosing how to run on this machine: precision, memory format, threads, data-loading workers."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch

PRECISIONS = ("auto", "32", "bf16")


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX).

    Without those instructions bf16 is emulated and runs several times slower than fp32 (measured on
    an AVX2-only EPYC: 4 img/s in bf16 against 30 img/s in fp32 for EfficientNet-Lite0).
    """
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(flag in flags for flag in (" amx_bf16", " avx512_bf16"))


def resolve_precision(precision: str) -> str:
    """'auto' -> 'bf16' where the hardware makes it fast, else '32'. Returns '32' or 'bf16'."""
    if precision not in PRECISIONS:
        from .errors import GraftError

        raise GraftError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "32"
    return "bf16" if cpu_has_fast_bf16() else "32"


def lightning_precision(precision: str) -> str:
    return "bf16-mixed" if resolve_precision(precision) == "bf16" else "32-true"


def default_workers() -> int:
    """DataLoader worker processes: one core left to the model's own threads, and none on 2 cores.

    On 2 cores the model's threads already keep both busy and a loader process can only take turns
    with them: extraction ran as fast or up to 15% slower with 1 worker than decoding between batches
    in the main process (benchmarks/profile_steps.py, docs/benchmarks.md).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores <= 2 else min(8, cores - 1)


def accelerator_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def cache_root() -> Path:
    """$GRAFT_CACHE, else $XDG_CACHE_HOME/graft, else ~/.cache/graft."""
    return Path(os.environ.get("GRAFT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "graft"))
