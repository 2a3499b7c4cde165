"""Writing a feature cache entry's files: the space for the features reserved before the memory map
is written, rows made durable and recorded as they come, everything synced before the entry counts
as complete; and a temporary folder for features when the cache cannot be written.

A plain memory map makes a sparse file, and a disk that fills up while rows are written through it
can only end the process (SIGBUS). Here the blocks are claimed first, so a full disk is a GraftError
naming the folder before any row is computed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import GraftError
from ..io import fsync_path, write_json_atomic
from ..memory import drop_flushed_pages
from .entry import (
    CONTENTS_FILE,
    FEATURES_DTYPE,
    FEATURES_FILE,
    FILES_FILE,
    LABELS_FILE,
    META_FILE,
    PROGRESS_FILE,
    FeatureSet,
    crc32,
    open_entry,
    warn,
)

# Rows are made durable and recorded at most this often: a flush, two fsyncs and a rename cost a few
# milliseconds, more than a batch takes on a fast GPU; a kill loses at most this much extraction.
PROGRESS_EVERY_S = 1.0

DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST}
_warned_unwritable: set[str] = set()

# What writes the features: fill(out, start, written), see FeatureCache.build.
Fill = Callable[[np.ndarray, int, Callable[[int], None]], None]


def write_entry(folder: Path, key: str | None, *, count: int, dim: int, labels: np.ndarray, describe: dict,
                fill: Fill, cache_root: Path, hint: str | None = None, start: int = 0,
                resumable: bool = False, files: np.ndarray | None = None,
                contents: np.ndarray | None = None) -> None:
    """Write features (through `fill`, from row `start`: the rows before are in the features file
    already), labels, the rows' file identities `files` and content digests `contents` where given
    (graft.features.reuse) and
    meta.json into `folder`, all synced to disk. `resumable`: record in progress.json how many rows
    are durable, as `fill` reports them written.

    A full disk or quota, when the space is reserved or later, raises a GraftError naming
    `cache_root` (with `hint` on where else to put the cache)."""
    try:
        path = folder / FEATURES_FILE
        features = open_memmap(path, (count, dim)) if start else reserve_memmap(path, (count, dim))
        recorded = time.monotonic()

        def written(rows: int) -> None:
            nonlocal recorded
            if not resumable or rows >= count or time.monotonic() - recorded < PROGRESS_EVERY_S:
                return  # all rows done: the entry is about to be complete anyway
            features.flush()  # the rows first, on disk for sure; only then the count that says so
            drop_flushed_pages(features)  # written and flushed: they need not stay in this process
            fsync_path(path)
            write_json_atomic(folder / PROGRESS_FILE, {"rows": rows, "count": count, "dim": dim})
            recorded = time.monotonic()

        fill(features, start, written)
        features.flush()
        crc = crc32(features)
        fsync_path(folder / FEATURES_FILE)
        _save_synced(folder / LABELS_FILE, lambda handle: np.save(handle, labels))
        if files is not None:
            _save_synced(folder / FILES_FILE, lambda handle: np.save(handle, files))
        if contents is not None:
            _save_synced(folder / CONTENTS_FILE, lambda handle: np.save(handle, contents))
        meta = {"key": key, "count": count, "dim": dim, "dtype": FEATURES_DTYPE.name, "features_crc32": crc,
                "created": time.time(), **describe}
        if key is None:
            del meta["key"]
        text = json.dumps(meta, indent=1, default=str).encode()
        _save_synced(folder / META_FILE, lambda handle: handle.write(text))  # last: it marks the entry complete
        fsync_path(folder)
    except OSError as error:
        if error.errno in DISK_FULL:
            raise disk_full(cache_root, entry_bytes(count, dim), error, hint=hint) from error
        raise


def reserve_memmap(path: Path, shape: tuple[int, int]) -> np.memmap:
    """A new .npy of `shape`, its space allocated on disk before it is memory-mapped.

    A plain memmap makes a sparse file: when the disk fills up while rows are written through it,
    the kernel can only kill the process (SIGBUS). posix_fallocate claims every block first, so a
    full disk is an OSError (ENOSPC) here instead."""
    header = {"descr": np.lib.format.dtype_to_descr(FEATURES_DTYPE), "fortran_order": False, "shape": shape}
    with open(path, "xb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        offset = handle.tell()
        size = offset + shape[0] * shape[1] * FEATURES_DTYPE.itemsize
        handle.flush()
        _allocate(handle.fileno(), size, path.parent)
        handle.truncate(size)  # where the space could not be reserved, at least the right length
    return np.memmap(path, dtype=FEATURES_DTYPE, mode="r+", shape=shape, offset=offset)


def open_memmap(path: Path, shape: tuple[int, int]) -> np.memmap:
    """The features file of a build being resumed, checked by `partial.resumable_rows`, to write on into."""
    features = np.load(path, mmap_mode="r+", allow_pickle=False)
    if features.shape != shape or features.dtype != FEATURES_DTYPE:  # changed since it was checked
        raise OSError(errno.EIO, f"{FEATURES_FILE} changed while graft resumed it", str(path))
    return features


def _allocate(descriptor: int, size: int, folder: Path) -> None:
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is not None:
        try:
            allocate(descriptor, 0, size)
            return
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
                raise
    # No fallocate here (macOS, Windows, some network file systems): check the free space instead.
    if shutil.disk_usage(folder).free < size:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))


def _save_synced(path: Path, write: Callable) -> None:
    with open(path, "xb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def build_in_temporary(key: str, *, count: int, dim: int, labels: np.ndarray, describe: dict,
                       fill: Fill) -> FeatureSet:
    """Features for a cache that cannot be written: built in a temporary folder, which is removed
    as soon as they are mapped (POSIX keeps a mapped file's data until it is unmapped), so nothing
    is left behind even if the process is killed. Not an entry: no key, no derived results."""
    try:
        folder = Path(tempfile.mkdtemp(prefix=f"graft-features-{key[:8]}-"))
    except OSError as error:
        raise GraftError(f"The feature cache is not writable, and neither is the temporary folder "
                         f"{tempfile.gettempdir()} ({error.strerror or error}). Point GRAFT_CACHE (or --cache-dir) "
                         "at a writable folder.") from error
    try:
        write_entry(folder, None, count=count, dim=dim, labels=labels, describe=describe, fill=fill,
                    cache_root=folder.parent, hint="set TMPDIR to a folder with room, or make the feature cache "
                    "writable (GRAFT_CACHE or --cache-dir)")
        built = open_entry(folder, checksum=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return built


def entry_bytes(count: int, dim: int) -> int:
    return count * dim * FEATURES_DTYPE.itemsize + count * 40 + 4096  # features, labels, files, contents, headers, meta


def disk_full(folder: Path, needed: int, error: OSError, *, hint: str | None = None) -> GraftError:
    what = "disk is full" if error.errno == errno.ENOSPC else "disk quota is used up"
    hint = hint or ("free some space there (`graft cache rm` removes old features), or point the cache at a "
                    "disk with room: set GRAFT_CACHE=/path/with/room, or pass --cache-dir")
    return GraftError(f"No room for the features in {folder}: they need {format_bytes(needed)} and the {what} "
                      f"({error.strerror or error}). To fix: {hint}.")


def warn_unwritable(root: Path, error: OSError) -> None:
    if str(root) in _warned_unwritable:
        return
    _warned_unwritable.add(str(root))
    warn(f"the feature cache {root} is not writable ({error.strerror or error}); features are computed in a "
         "temporary folder and not kept for the next run. To keep them, make that folder writable, or set "
         "GRAFT_CACHE (or --cache-dir) to a writable folder.")


def format_bytes(size: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"
