"""The comparison's two figures: validation accuracy per epoch, and where the time went."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from ..plotting import write_png


def accuracy_plot(comparison, path: Path) -> Path:
    """Every strategy's validation accuracy per epoch on one chart (the course's finding at a glance)."""
    figure = Figure(figsize=(7.5, 4.5), dpi=110)
    axes = figure.add_subplot()
    last = max(comparison.epochs, 1)
    for row in comparison.rows:
        epochs, accuracy = zip(*row.curve)
        if len(row.curve) == 1 and row.epoch_time_s is None:  # linear-probe: one fit, no epochs
            axes.hlines(accuracy[0] * 100, 0, last, linestyles="--", label=f"{row.strategy} (one fit)", color="grey")
            continue
        axes.plot(epochs, [a * 100 for a in accuracy], marker="o", label=row.strategy)
    axes.set_title(f"Validation accuracy per epoch ({comparison.backbone}, seed {comparison.seed})")
    axes.set_xlabel("epoch of the main training phase (0 = head trained on the frozen base)")
    axes.set_ylabel("validation accuracy (%)")
    axes.set_xticks(range(0, last + 1))
    axes.set_ylim(0, 103)  # room above 100% so a perfect score stays visible
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return _save(figure, path)


def time_plot(comparison, path: Path) -> Path:
    """Time per epoch, and the whole run split into features, training and the rest, per strategy."""
    figure = Figure(figsize=(9, 4), dpi=110)
    per_epoch, total = figure.subplots(1, 2)
    names = [row.strategy for row in comparison.rows]
    epoch_times = [row.epoch_time_s or 0.0 for row in comparison.rows]
    bars = per_epoch.bar(names, epoch_times, color="tab:blue")
    per_epoch.bar_label(bars, labels=[f"{t:.1f}" if t else "no epochs" for t in epoch_times], fontsize=8)
    per_epoch.set_title("Time per epoch")
    per_epoch.set_ylabel("seconds")

    features = [row.features_s for row in comparison.rows]
    rest = [max(row.total_s - row.features_s, 0.0) for row in comparison.rows]
    total.bar(names, features, label="backbone features (cached)", color="tab:orange")
    stacked = total.bar(names, rest, bottom=features, label="training, evaluation, saving", color="tab:blue")
    total.bar_label(stacked, labels=[f"{row.total_s:.0f}" for row in comparison.rows], fontsize=8)
    total.set_title("Total time per strategy")
    total.set_ylabel("seconds")
    total.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncols=2, frameon=False)
    for axes in (per_epoch, total):
        axes.tick_params(axis="x", labelrotation=20, labelsize=9)
        axes.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    return write_png(figure, path)
