"""The report's figures: training curves, confusion matrices, the most confident mistakes.

Each function returns a matplotlib Figure (object API, no pyplot state); `graft.explain.png_bytes`
or `write_png` turn it into a PNG. `curves_figure` takes several runs, for comparisons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..evaluation import Evaluation

if TYPE_CHECKING:  # matplotlib, scikit-learn and graft.explain are imported where a figure is drawn:
    # a report whose figures come from graft's cache (graft.report.cache) imports none of them
    from matplotlib.figure import Figure

    from ..explain import MapPair

HEAD_SHADE = "0.9"
SPLIT_NAMES = {"train": "Training", "val": "Validation", "test": "Test"}


def curves_figure(runs: Mapping[str, Sequence[dict]], *, title: str | None = None) -> Figure:
    """Loss, accuracy and learning rate per epoch for each run's history rows (name -> rows).

    Epochs are counted across phases: the image phase continues where the head phase stopped.
    One run: train dashed, val solid, phases shaded and named. Several: one colour per run, and a
    dotted line where a run's image phase starts. A star marks each run's best validation accuracy:
    the epoch whose weights the run kept.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    figure = Figure(figsize=(12, 4.2), layout="constrained")
    loss_ax, accuracy_ax, lr_ax = figure.subplots(1, 3)
    several = len(runs) > 1
    for index, (name, rows) in enumerate(runs.items()):
        epochs = np.arange(1, len(rows) + 1)
        for series, style in (("train", "--"), ("val", "-")):
            colour = f"C{index}" if several else ("C0" if series == "train" else "C1")
            label = f"{name} {series}" if several else series
            for ax, key in ((loss_ax, "loss"), (accuracy_ax, "acc")):
                ax.plot(epochs, _values(rows, f"{series}_{key}"), style, color=colour, marker="o", markersize=3, label=label)
        lr_ax.plot(epochs, _values(rows, "lr"), color=f"C{index}", marker="o", markersize=3, label=name if several else "lr")
        accuracy = _values(rows, "val_acc")
        if not np.isnan(accuracy).all():
            best = int(np.nanargmax(accuracy))  # the first best epoch: later ties do not replace it
            accuracy_ax.plot(best + 1, accuracy[best], "*", color=f"C{index}" if several else "C1", markersize=13,
                             markeredgecolor="black", label=f"{name} kept" if several else f"kept (val {accuracy[best]:.1%})")
        for first, last, phase in _phase_spans(rows):
            if several and first > 1:
                for ax in (loss_ax, accuracy_ax, lr_ax):
                    ax.axvline(first - 0.5, color=f"C{index}", linestyle=":", linewidth=1.2)
            elif not several and phase == "head":
                for ax in (loss_ax, accuracy_ax, lr_ax):
                    ax.axvspan(first - 0.5, last + 0.5, color=HEAD_SHADE, zorder=0)
    for ax, name in ((loss_ax, "loss (cross-entropy)"), (accuracy_ax, "accuracy"), (lr_ax, "learning rate")):
        ax.set_xlabel("epoch (all phases, in order)")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    loss_ax.set_title("Loss")
    accuracy_ax.set_title("Accuracy")
    accuracy_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    lr_ax.set_title("Learning rate of the head")
    lr_ax.set_yscale("log")
    handles, labels = accuracy_ax.get_legend_handles_labels()
    if not several:  # the phases, named once for the three plots
        phases = {row["phase"] for rows in runs.values() for row in rows}
        handles += [Patch(color=HEAD_SHADE, label="head phase (cached features)")] if "head" in phases else []
        handles += [Patch(facecolor="white", edgecolor="0.6", label="image phase")] if "images" in phases else []
    elif any(len(_phase_spans(rows)) > 1 for rows in runs.values()):
        handles.append(Line2D([], [], color="0.4", linestyle=":", label="image phase starts"))
    labels = [handle.get_label() for handle in handles]
    figure.legend(handles, labels, loc="outside lower center", ncols=min(len(handles), 6), fontsize=9, frameon=False)
    if title:
        figure.suptitle(title, fontsize=13, fontweight="bold")
    return figure


def confusion_figure(evaluation: Evaluation, *, split: str = "val") -> Figure:
    """The confusion matrix with class names on the axes and the count in each cell."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    from sklearn.metrics import ConfusionMatrixDisplay

    count = len(evaluation.classes)
    side = float(np.clip(2.2 + 0.45 * count, 4.2, 16.0))
    figure = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = figure.subplots()
    names = [name if len(name) <= 24 else f"{name[:11]}…{name[-12:]}" for name in evaluation.classes]  # ends differ most
    display = ConfusionMatrixDisplay(np.asarray(evaluation.confusion), display_labels=names)
    display.plot(ax=ax, cmap="Blues", values_format="d", include_values=count <= 25, colorbar=True,
                 xticks_rotation=45 if count > 4 or max(map(len, names)) > 8 else 0)
    display.im_.colorbar.set_label("images")
    display.im_.colorbar.locator = MaxNLocator(integer=True)  # counts: no 0.5 ticks
    display.im_.colorbar.update_ticks()
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{SPLIT_NAMES.get(split, split)}: {evaluation.count} images, accuracy {evaluation.accuracy:.1%}\n"
                 "rows: true class, columns: predicted; the diagonal is correct", fontsize=11)
    return figure


def mistakes_figure(pairs: Sequence[MapPair], *, per_row: int = 2) -> Figure:
    """The most confident mistakes: each image beside the map of the class it was mistaken for."""
    from ..explain import map_pairs_figure

    return map_pairs_figure(pairs, per_row=min(per_row, len(pairs)), panel_inches=2.4, font_size=10)


def _values(rows: Sequence[dict], key: str) -> list[float]:
    return [np.nan if row.get(key) is None else float(row[key]) for row in rows]


def _phase_spans(rows: Sequence[dict]) -> list[tuple[int, int, str]]:
    """(first epoch, last epoch, phase) for each run of consecutive rows of one phase, epochs from 1."""
    spans: list[tuple[int, int, str]] = []
    for epoch, row in enumerate(rows, 1):
        if spans and spans[-1][2] == row["phase"]:
            spans[-1] = (spans[-1][0], epoch, row["phase"])
        else:
            spans.append((epoch, epoch, row["phase"]))
    return spans


def precision_recall_figure(targets: np.ndarray, probabilities: np.ndarray, *, classes: Sequence[str],
                            thresholds: Sequence[float], split: str = "test") -> Figure:
    """Each class's precision-recall curve (several labels per image), its average precision in the
    legend and a dot where its threshold puts it; a class without a positive image has no curve."""
    from matplotlib.figure import Figure
    from sklearn.metrics import average_precision_score, precision_recall_curve

    figure = Figure(figsize=(6.4, 5.0), layout="constrained")
    ax = figure.subplots()
    for column, name in enumerate(classes):
        truth, scores = targets[:, column], probabilities[:, column]
        if not truth.any():
            continue
        precision, recall, cuts = precision_recall_curve(truth, scores)
        line, = ax.plot(recall, precision, drawstyle="steps-post", linewidth=1.6,
                        label=f"{name} (AP {average_precision_score(truth, scores):.3f})")
        chosen = scores >= thresholds[column]
        if chosen.any():
            ax.plot(truth[chosen].sum() / truth.sum(), truth[chosen].mean(), "o", color=line.get_color(),
                    markeredgecolor="black", markersize=7)
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.set_title(f"{SPLIT_NAMES.get(split, split)}: precision and recall per class\n"
                 "dots: each class's threshold (chosen on validation)", fontsize=11)
    ax.legend(fontsize=8, loc="lower left")
    return figure


def cooccurrence_figure(targets: np.ndarray, *, classes: Sequence[str], split: str = "train") -> Figure:
    """How often each pair of labels is given to the same image (the diagonal: each label's images)."""
    from matplotlib.figure import Figure

    counts = targets.astype(np.int64).T @ targets.astype(np.int64)
    count = len(classes)
    side = float(np.clip(2.2 + 0.45 * count, 4.2, 16.0))
    figure = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=ax, label="images")
    names = [name if len(name) <= 24 else f"{name[:11]}…{name[-12:]}" for name in classes]
    ax.set_xticks(range(count), names, rotation=45 if count > 4 else 0, ha="right" if count > 4 else "center")
    ax.set_yticks(range(count), names)
    if count <= 25:
        for row in range(count):
            for column in range(count):
                ax.text(column, row, str(counts[row, column]), ha="center", va="center", fontsize=9,
                        color="white" if counts[row, column] > counts.max() / 2 else "black")
    ax.set_title(f"{SPLIT_NAMES.get(split, split)}: labels given together\n"
                 "each cell: images with both labels; the diagonal: images with the label", fontsize=11)
    return figure
