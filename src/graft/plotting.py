"""PNG output for every graft figure: rendering a matplotlib Figure, and writing it atomically.

Figures are built with matplotlib's object API (Figure + FigureCanvasAgg), never pyplot, so that
nothing depends on a display or on global state. matplotlib is imported inside the functions: only
the modules that draw import this one, and they have already paid for it.
"""

from __future__ import annotations

import io
from pathlib import Path

from .io import atomic_path, write_bytes_atomic

DPI = 110


def png_bytes(figure) -> bytes:
    """The figure rendered as a PNG file's bytes."""
    buffer = io.BytesIO()
    _save_png(figure, buffer)
    return buffer.getvalue()


def write_png(data, path: str | Path) -> Path:
    """Write PNG bytes, or a matplotlib Figure rendered as PNG, to `path` atomically."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return write_bytes_atomic(path, bytes(data))
    path = Path(path)
    with atomic_path(path) as temporary:
        _save_png(data, temporary)
    return path


def _save_png(figure, target) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    # zlib level 1: a larger file for a faster encode, which was a large share of a cached run
    # (docs/benchmarks.md, "5. Cache reuse", has the figures).
    figure.savefig(target, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})
