"""One entry of the feature cache on disk: its files and their format, its key, and the checks
made whenever it is read.

An entry is a folder named by its key: features.npy (float16, N x D), labels.npy (N integers),
for a plain view files.npy (N x 16 bytes: each row's file identity, graft.fingerprint.identity_digest,
which later entries reuse rows by; graft.features.reuse), for a plain view contents.npy (N x 16
bytes: each row's file contents, graft.fingerprint.content_digest, zeros where not known, by which
a copy of an extracted file reuses its row) and meta.json (count, dim, dtype, the
features' CRC-32, and what the features are, with the settings key of a plain view). meta.json is
written last, so a folder without it was never complete. A build in progress lives in a folder
named `.partial-KEY` (graft.features.partial) with owner.json and progress.json beside the files.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FEATURES_FILE = "features.npy"
LABELS_FILE = "labels.npy"
FILES_FILE = "files.npy"  # a plain view's per-row file identities (graft.features.reuse)
CONTENTS_FILE = "contents.npy"  # a plain view's per-row digests of the files' bytes (graft.features.reuse)
META_FILE = "meta.json"
OWNER_FILE = "owner.json"  # in a partial build only: who is writing it
PROGRESS_FILE = "progress.json"  # in a partial build only: how many rows are on disk for sure
PARTIAL_PREFIX = ".partial-"
FEATURES_DTYPE = np.dtype(np.float16)

# The CRC-32 of the features is checked on every read up to this size: about 4 GB/s from the page
# cache (measured: 60 ms for 256 MB on a 2-core machine, 0.15 s for SHA-256), more from a cold disk.
# Larger entries get the structural checks on read; `graft cache verify` always checks the CRC.
CHECKSUM_ON_READ_BYTES = 64 * 2**20


def cache_key(parts: dict) -> str:
    """A short, stable hash of a JSON-able description of the features."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class FeatureSet:
    """Features (N x D float16, memory-mapped) and labels (N) of one split and view."""

    features: np.ndarray
    labels: np.ndarray
    meta: dict
    path: Path

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class CacheEntry:
    key: str
    path: Path
    size_bytes: int
    count: int
    dim: int
    description: str
    created: float
    problem: str | None = None  # why the entry is damaged; None when it is sound


class DamagedEntry(Exception):
    """Raised inside the cache when an entry fails its checks; never reaches a user."""


def open_entry(folder: Path, *, checksum: bool | None) -> FeatureSet:
    """The entry in `folder`, or DamagedEntry with the reason. `checksum`: True always checks the
    features' CRC-32, False never, None when the features are at most CHECKSUM_ON_READ_BYTES."""
    if not folder.is_dir():
        raise DamagedEntry("not a folder")
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise DamagedEntry(f"{META_FILE} is missing") from None
    except (OSError, ValueError) as error:  # ValueError: invalid JSON or text
        raise DamagedEntry(f"{META_FILE} cannot be read ({short(error)})") from None
    if not isinstance(meta, dict):
        raise DamagedEntry(f"{META_FILE} is not a JSON object")
    count, dim = meta.get("count"), meta.get("dim")
    if not (is_count(count) and is_count(dim)):
        raise DamagedEntry(f"{META_FILE} has no valid count and dim")
    dtype = np.dtype(meta.get("dtype", FEATURES_DTYPE.name))
    features_path = folder / FEATURES_FILE
    try:
        features = np.load(features_path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DamagedEntry(f"{FEATURES_FILE} is missing") from None
    except (OSError, ValueError, EOFError) as error:
        raise DamagedEntry(f"{FEATURES_FILE} cannot be read ({short(error)})") from None
    if features.shape != (count, dim):
        raise DamagedEntry(f"{FEATURES_FILE} has shape {features.shape}, {META_FILE} says {(count, dim)}")
    if features.dtype != dtype:
        raise DamagedEntry(f"{FEATURES_FILE} holds {features.dtype}, {META_FILE} says {dtype}")
    expected_size = getattr(features, "offset", 0) + features.nbytes
    if features_path.stat().st_size != expected_size:  # memmap ignores bytes beyond the array
        raise DamagedEntry(f"{FEATURES_FILE} is {features_path.stat().st_size:,} bytes, not {expected_size:,}")
    try:
        labels = np.load(folder / LABELS_FILE, allow_pickle=False)
    except FileNotFoundError:
        raise DamagedEntry(f"{LABELS_FILE} is missing") from None
    except (OSError, ValueError, EOFError) as error:
        raise DamagedEntry(f"{LABELS_FILE} cannot be read ({short(error)})") from None
    if labels.shape != (count,) or labels.dtype.kind not in "iu":
        raise DamagedEntry(f"{LABELS_FILE} holds {labels.shape} {labels.dtype}, not {count} integer labels")
    recorded = meta.get("features_crc32")
    if checksum is None:
        checksum = features.nbytes <= CHECKSUM_ON_READ_BYTES
    if checksum and recorded is not None and crc32(features) != recorded:
        raise DamagedEntry(f"{FEATURES_FILE} does not match its checksum")
    return FeatureSet(features=features, labels=labels, meta=meta, path=folder)


def describe_entry(folder: Path, *, checksum: bool) -> CacheEntry:
    """What `graft cache ls` shows of the entry in `folder`: its size and contents, and its problem
    where it fails its checks (with `checksum`, the CRC-32 too)."""
    problem = None
    meta: dict = {}
    try:
        meta = open_entry(folder, checksum=checksum).meta
    except DamagedEntry as damage:
        problem = str(damage)
        meta = read_json_quietly(folder / META_FILE)
    return CacheEntry(
        key=folder.name,
        path=folder,
        size_bytes=folder_size(folder),
        count=int_or_zero(meta.get("count")),
        dim=int_or_zero(meta.get("dim")),
        description=f"{meta.get('backbone', '?')} {meta.get('split', '?')} view {meta.get('view', '?')}"
                    + (f" ({meta['engine']})" if meta.get("engine") else ""),
        created=meta["created"] if isinstance(meta.get("created"), (int, float)) else 0.0,
        problem=problem,
    )


def crc32(array: np.ndarray) -> str:
    flat = array.reshape(-1).view(np.uint8)
    crc, step = 0, 64 * 2**20  # in slices: a memory map pages in a slice at a time
    for start in range(0, flat.size, step):
        crc = zlib.crc32(flat[start : start + step].data, crc)
    return f"{crc:08x}"


# Small helpers, shared by the cache's modules


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def int_or_zero(value) -> int:
    return value if is_count(value) else 0


def short(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def read_json_quietly(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def children(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def folder_size(folder: Path) -> int:
    total = 0
    for path in children(folder):
        try:
            total += path.stat().st_size
        except OSError:
            pass
    return total
