"""A run's memory kept to what its current phase holds.

Two things made a run's resident memory (what /usr/bin/time and the OS count) grow from phase to
phase, far beyond what any phase needed (docs/benchmarks.md, "4. Memory", has the figures):

- glibc keeps memory a phase freed (hundreds of MB of tensors and arrays) for later allocations
  instead of giving it back, so the next phase's peak stacks on the last one's: `give_back` returns
  it to the system (malloc_trim; nothing elsewhere than glibc);
- reading cached features through their memory map leaves every page read resident in the process
  (100,000 images' float16 features: 250 MB): `float32_rows` copies rows out and lets the pages go
  (they stay in the system's file cache, so reading them again costs no disk read);
- scikit-learn's StandardScaler.fit holds a float64 copy of all its rows and a mask as large, 2.2
  times the float32 features it standardises (1.1 GB for 100,000 images): `standard_scaler` fits it
  a block of rows at a time.

Torch-free; numpy and scikit-learn are imported where they are used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
from functools import cache


def give_back() -> None:
    """Return the memory this process freed to the system, where the C library can (glibc)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to give back this way
        return None


COPY_BLOCK_ROWS = 16384  # rows of a memory map copied between two releases of its pages


def float32_rows(features, rows=slice(None)):
    """A float32 copy of `features[rows]` (an array or a numpy memory map, e.g. a FeatureSet's
    features); a memory map's pages are dropped from this process (not from the file cache) as it
    goes: all of them copied a block of COPY_BLOCK_ROWS at a time, each block's pages let go before the
    next is read (100,000 rows of float16 features: 244 MB of pages otherwise held beside the copy)."""
    import numpy as np

    if not (isinstance(rows, slice) and rows == slice(None)):
        copy = np.array(features[rows], dtype=np.float32)
        release_pages(features)
        return copy
    copy = np.empty(features.shape, dtype=np.float32)
    for start in range(0, len(features), COPY_BLOCK_ROWS):
        copy[start : start + COPY_BLOCK_ROWS] = features[start : start + COPY_BLOCK_ROWS]
        release_pages(features)
    return copy


def release_pages(array) -> None:
    """Drop the pages of the read-only memory map behind `array` (if any) from this process."""
    _dont_need(array, read_only=True)


def drop_flushed_pages(array) -> None:
    """Unmap the pages of the writable memory map behind `array` from this process, after
    `array.flush()` has written them to its file: they stay in the file (and the page cache) and
    come back when read, but stop counting in the process's memory while the rest is written
    (100,000 rows of features held 256 MB of them by the end of an extraction)."""
    _dont_need(array, read_only=False)


def _dont_need(array, *, read_only: bool) -> None:
    while array is not None and getattr(array, "_mmap", None) is None:
        array = getattr(array, "base", None)
    mapped = getattr(array, "_mmap", None)
    if mapped is None or not hasattr(mmap, "MADV_DONTNEED") or (read_only and getattr(array, "mode", "r") != "r"):
        return
    try:
        mapped.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # closed, or a system without it: the pages just stay
        pass


SCALER_BLOCK_BYTES = 128 << 20  # the float64 rows StandardScaler holds at once in `standard_scaler`


def standard_scaler(x):
    """scikit-learn's StandardScaler fitted on the rows of `x` (N x D): `fit` on the first block of
    rows, `partial_fit` on each next one, each block SCALER_BLOCK_BYTES of float64. Up to a block's
    rows (13,107 of 1,280 features) that is `StandardScaler().fit(x)` bit for bit; beyond, its mean
    and variance are combined block by block (Chan, Golub and LeVeque's update, as partial_fit does),
    the same to the last bits of float64."""
    from sklearn.preprocessing import StandardScaler

    rows = max(1, SCALER_BLOCK_BYTES // (8 * max(1, x.shape[1])))
    scaler = StandardScaler().fit(x[:rows])
    for start in range(rows, len(x), rows):
        scaler.partial_fit(x[start : start + rows])
    return scaler
