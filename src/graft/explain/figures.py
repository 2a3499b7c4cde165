"""Figures of images beside their activation maps.

Figures are built with matplotlib's object API (Figure, never pyplot), so that nothing depends on a
display or on global state; `graft.plotting` turns them into PNG files.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from .overlay import overlay


@dataclass
class MapPair:
    """One image beside its activation map, with the words that go over (and under) them."""

    view: Image.Image  # the image as the model saw it
    heatmap: np.ndarray  # h x w in [0, 1]
    image_title: str
    map_title: str
    note: str = ""  # under the image, e.g. the file name


def map_pairs_figure(
    pairs: Sequence[MapPair],
    *,
    title: str | None = None,
    per_row: int = 1,
    panel_inches: float = 3.6,
    colormap: str = "jet",
    font_size: float = 10,
) -> Figure:
    """Each image and its map blended over it, side by side, `per_row` pairs a row, one colour scale."""
    rows = max(1, -(-len(pairs) // per_row))
    height = rows * (panel_inches + 0.7) + (0.6 if title else 0.1)
    figure = Figure(figsize=(2 * per_row * panel_inches + 1.2, height), layout="constrained")
    axes = figure.subplots(rows, 2 * per_row, squeeze=False)
    width = max(12, int(panel_inches * 72 / (0.6 * font_size)))  # characters that fit over one panel
    for index, ax in enumerate(axes.flat):
        ax.set(xticks=[], yticks=[])  # no ticks to lay out: halves the time to draw the figure
        ax.set_axis_off()
        pair = pairs[index // 2] if index // 2 < len(pairs) else None
        if pair is None:
            continue
        if index % 2 == 0:
            ax.imshow(pair.view)
            ax.set_title(_wrap(pair.image_title, width), fontsize=font_size)
            if pair.note:
                ax.text(0.5, -0.03, _wrap(pair.note, width + 8), transform=ax.transAxes, ha="center", va="top",
                        fontsize=font_size - 1, color="0.3")
        else:
            ax.imshow(overlay(pair.view, pair.heatmap, colormap=colormap))
            ax.set_title(_wrap(pair.map_title, width), fontsize=font_size)
    scale = figure.colorbar(ScalarMappable(Normalize(0, 1), cmap=colormap), ax=axes, shrink=min(0.9, 3.2 / height),
                            aspect=20, pad=0.01)
    scale.set_label("evidence for the class", fontsize=font_size - 1)
    scale.set_ticks([0, 0.5, 1], labels=["none", "half", "strongest\nin image"])
    scale.ax.tick_params(labelsize=font_size - 2)
    if title:
        figure.suptitle(title, fontsize=font_size + 2, fontweight="bold")
    return figure


def _wrap(text: str, width: int) -> str:
    """At most two lines: long class names (ImageNet lists synonyms) must not run over the next panel."""
    lines = textwrap.wrap(text, width)
    return "\n".join(lines[:2]) + ("…" if len(lines) > 2 else "")
