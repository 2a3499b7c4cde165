"""Results computed from cached features (a logistic-regression fit, the audit's out-of-fold
probabilities), stored inside the features' cache entry.

Kept in the entry, they go with it: `graft cache rm` removes them together, and new features never
meet old results. Features that are not a cache entry (made by hand, or built where the cache
cannot be written) never have any.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_path
from .entry import FeatureSet, cache_key


def load_derived(features: FeatureSet, name: str, parts: dict) -> dict[str, np.ndarray] | None:
    """Arrays computed earlier from `features` with the settings `parts`, or None."""
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
