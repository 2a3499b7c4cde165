"""The report every training run writes: curves, confusion matrices, per-class metrics, the most
confident mistakes with their activation maps, and the data audit (report.html and report.md)."""

from .mistakes import MISTAKES_SHOWN, Mistake, confident_mistakes
from .plots import confusion_figure, curves_figure, mistakes_figure
from .writer import write_report

__all__ = [
    "MISTAKES_SHOWN",
    "Mistake",
    "confident_mistakes",
    "confusion_figure",
    "curves_figure",
    "mistakes_figure",
    "write_report",
]
