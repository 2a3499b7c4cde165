"""The report's figures kept in graft's cache, so that a run whose figures would be drawn from the
same inputs as an earlier run's takes them from there instead of drawing them again.

Drawing is most of a report's time where the run itself took its features and fit from the cache:
the channel figures run the backbone and a gradient on sampled training images, the mistakes
figure computes activation maps, and matplotlib renders every figure (docs/benchmarks.md, "5. Cache
reuse", has the figures). A figure is keyed by everything it is drawn from (its `parts`: the
numbers, the files' identities, the model's weights) and by what draws it: the source of graft's
drawing modules (DRAWING) and the versions of the libraries they call, so a change to either draws
afresh. It is kept with the few values its section's text needs from the drawing (`extras`) in
cache_root()/report/KEY.json, written whole (graft.io) and checked when read: a damaged file is
drawn again, and a cache that cannot be written only means drawing every time. Same inputs, same
PNG bytes: a figure from the cache is the one that drawing would give.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ..io import write_json_atomic
from ..runtime import cache_root

FORMAT = 1  # bump when what an entry holds changes
FOLDER = "report"
# graft's modules whose code decides a figure's pixels (relative to the graft package)
DRAWING = ("plotting.py", "report/plots.py", "report/mistakes.py", "report/cache.py", "explain/cam.py",
           "explain/channels.py", "explain/feature_maps.py", "explain/figures.py", "explain/overlay.py",
           "data/transforms.py", "data/images.py")
LIBRARIES = ("matplotlib", "pillow", "numpy", "torch", "timm", "scikit-learn")


def figure_png(kind: str, parts: Any, draw: Callable[[], tuple[Any, dict]]) -> tuple[bytes, dict]:
    """The PNG bytes of a figure and its extras: from the cache where a figure of this `kind` was
    drawn from the same `parts` (JSON-able) by the same code, else `draw()` (a matplotlib Figure and
    a JSON-able dict of extras), rendered and kept. `parts` None: drawn, never kept."""
    from ..plotting import png_bytes

    path = entry_path(kind, parts) if parts is not None else None
    if path is not None:
        kept = _read(path)
        if kept is not None:
            return kept
    figure, extras = draw()
    png = png_bytes(figure)
    if path is not None:
        try:
            write_json_atomic(path, {"format": FORMAT, "kind": kind, "extras": extras,
                                     "sha256": hashlib.sha256(png).hexdigest(),
                                     "png": base64.b64encode(png).decode("ascii")})
        except (OSError, TypeError, ValueError):  # a read-only cache, or extras that are not JSON: drawn next time too
            pass
    return png, extras


def entry_path(kind: str, parts: Any) -> Path:
    """Where the figure of `kind` drawn from `parts` is kept (it may not be there)."""
    key = json.dumps([FORMAT, kind, drawing_version(), parts], sort_keys=True, default=str)
    return cache_root() / FOLDER / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


@cache
def drawing_version() -> str:
    """A digest of the code that draws the report's figures: graft's DRAWING modules' source and
    the versions of the LIBRARIES they call."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for name in DRAWING:
        try:
            digest.update(name.encode() + (root / name).read_bytes())
        except OSError:
            digest.update(name.encode() + b"?")
    for package in LIBRARIES:
        try:
            digest.update(f"{package}={version(package)}".encode())
        except PackageNotFoundError:
            digest.update(f"{package}=none".encode())
    return digest.hexdigest()


def _read(path: Path) -> tuple[bytes, dict] | None:
    """A kept figure, or None where there is none or it does not check out."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        png = base64.b64decode(entry["png"], validate=True)
        if entry["format"] != FORMAT or hashlib.sha256(png).hexdigest() != entry["sha256"]:
            return None
        extras = entry["extras"]
        return (png, extras) if isinstance(extras, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
