"""An on-disk cache of backbone features, so a frozen backbone runs once per image and view.

Each entry is a folder named by a hash of everything that changes the features: the backbone,
its weights, the preprocessing, the cut stage, the augmentation and view index, and the file list
with sizes and modification times. Features are float16 in a memory-mapped .npy, written in
batches as they are computed, so a set larger than RAM streams through.

An entry is built in a temporary folder and renamed into place only when complete, so an
interrupted extraction is never mistaken for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GraftError
from ..io import atomic_path

FEATURES_FILE = "features.npy"
LABELS_FILE = "labels.npy"
META_FILE = "meta.json"


def default_cache_dir() -> Path:
    """$GRAFT_CACHE, else $XDG_CACHE_HOME/graft, else ~/.cache/graft; features live in features/."""
    from ..runtime import cache_root

    return cache_root() / "features"


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


class FeatureCache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def get(self, key: str) -> FeatureSet | None:
        folder = self.root / key
        if not (folder / META_FILE).exists():  # meta.json is written last: no meta, not complete
            return None
        meta = json.loads((folder / META_FILE).read_text())
        features = np.load(folder / FEATURES_FILE, mmap_mode="r")
        labels = np.load(folder / LABELS_FILE)
        return FeatureSet(features=features, labels=labels, meta=meta, path=folder)

    def build(
        self,
        key: str,
        *,
        count: int,
        dim: int,
        labels: np.ndarray,
        describe: dict,
        fill: Callable[[np.ndarray], None],
    ) -> FeatureSet:
        """Create an entry: `fill` writes rows into a float16 memmap of shape (count, dim)."""
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self.root / f".partial-{key}-{uuid.uuid4().hex[:8]}"
        partial.mkdir()
        try:
            features = np.lib.format.open_memmap(partial / FEATURES_FILE, mode="w+", dtype=np.float16, shape=(count, dim))
            fill(features)
            features.flush()
            del features
            np.save(partial / LABELS_FILE, np.asarray(labels, dtype=np.int64))
            meta = {"key": key, "count": count, "dim": dim, "created": time.time(), **describe}
            (partial / META_FILE).write_text(json.dumps(meta, indent=1, default=str))
            target = self.root / key
            if target.exists():  # another process finished the same entry first: keep theirs
                shutil.rmtree(partial)
            else:
                os.replace(partial, target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        built = self.get(key)
        if built is None:  # renamed a moment ago: only a concurrent `graft cache rm` gets here
            raise GraftError(f"The feature cache entry {key} vanished while it was written ({self.root}); run again.")
        return built

    def entries(self) -> list[CacheEntry]:
        if not self.root.exists():
            return []
        rows = []
        for folder in sorted(self.root.iterdir()):
            meta_path = folder / META_FILE
            if folder.name.startswith(".") or not meta_path.exists():
                continue
            meta = json.loads(meta_path.read_text())
            rows.append(
                CacheEntry(
                    key=folder.name,
                    path=folder,
                    size_bytes=sum(f.stat().st_size for f in folder.iterdir()),
                    count=meta.get("count", 0),
                    dim=meta.get("dim", 0),
                    description=f"{meta.get('backbone', '?')} {meta.get('split', '?')} view {meta.get('view', '?')}",
                    created=meta.get("created", 0.0),
                )
            )
        return rows

    def remove(self, keys: list[str] | None = None) -> int:
        """Delete the given entries (all, including leftovers of interrupted runs, when None)."""
        if not self.root.exists():
            return 0
        removed = 0
        for folder in list(self.root.iterdir()):
            if keys is None or folder.name in keys:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed


def load_derived(features: FeatureSet, name: str, parts: dict) -> dict[str, np.ndarray] | None:
    """Arrays computed earlier from `features` (a logistic-regression fit, the audit's out-of-fold
    probabilities) with the settings `parts`, or None. They live inside the features' cache entry,
    so `graft cache rm` removes them together, and new features never meet old results. Features
    that are not a cache entry (made by hand, without a key) never have any."""
    from safetensors.numpy import load_file

    if not features.meta.get("key"):
        return None
    path = _derived_path(features, name, parts)
    return load_file(str(path)) if path.exists() else None


def store_derived(features: FeatureSet, name: str, parts: dict, arrays: dict[str, np.ndarray]) -> None:
    """Store what `load_derived` reads, atomically (`graft.io`), so a crash never leaves half a
    result; a read-only cache just does not keep it."""
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    if not features.meta.get("key"):
        return
    try:
        with atomic_path(_derived_path(features, name, parts)) as temporary:
            save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}, str(temporary))
    except (OSError, SafetensorError):  # safetensors reports a failed write as its own error
        pass  # a read-only cache: the result is computed again next time


def _derived_path(features: FeatureSet, name: str, parts: dict) -> Path:
    return features.path / f"{name}-{cache_key(parts)[:16]}.safetensors"
