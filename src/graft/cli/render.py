"""Rich tables for the terminal: results, per-class metrics, confusion matrices, listings."""

from __future__ import annotations

import shlex
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..evaluation import Evaluation

# Text is never wrapped by the console (soft_wrap): a command or a path in it stays whole to copy and to
# grep, whatever the terminal's width; tables still fit the width.
console = Console(highlight=False, soft_wrap=True)
error_console = Console(stderr=True, highlight=False, soft_wrap=True)


def say(text: str) -> None:
    """A line of plain text: [brackets] in paths and class names are shown as they are, never read
    as markup."""
    console.print(escape(text))


def quote(path: str | Path) -> str:
    """A path as a shell word (quoted only where needed)."""
    return shlex.quote(str(path))


def evaluation_tables(evaluation: Evaluation, title: str) -> list[Table]:
    per_class = Table(title=f"{escape(title)}: accuracy {evaluation.accuracy:.1%} on {evaluation.count} images")
    for column in ("class", "precision", "recall", "F1", "images"):
        per_class.add_column(column, justify="left" if column == "class" else "right")
    for name, row in evaluation.per_class.items():
        per_class.add_row(escape(name), f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    per_class.add_row("[bold]macro avg[/]", "", "", f"[bold]{evaluation.macro_f1:.3f}[/]", str(evaluation.count))

    confusion = Table(title="Confusion matrix (rows: true class, columns: predicted)")
    confusion.add_column("true \\ pred")
    short = [escape(name[:6]) for name in evaluation.classes]
    for name in short:
        confusion.add_column(name, justify="right")
    for i, (name, counts) in enumerate(zip(evaluation.classes, evaluation.confusion)):
        confusion.add_row(escape(name), *[f"[bold]{v}[/]" if i == j else (str(v) if v else "·") for j, v in enumerate(counts)])
    return [per_class, confusion]


def history_table(history) -> Table:
    table = Table(title="Training history")
    for column in ("phase", "epoch", "train loss", "train acc", "val loss", "val acc", "lr", "time (s)"):
        table.add_column(column, justify="right")
    fmt = lambda v, spec: "" if v is None else format(v, spec)  # noqa: E731
    for row in history:
        table.add_row(row.phase, str(row.epoch), fmt(row.train_loss, ".3f"), fmt(row.train_acc, ".1%"),
                      fmt(row.val_loss, ".3f"), fmt(row.val_acc, ".1%"), fmt(row.lr, ".1e"), fmt(row.epoch_time_s, ".2f"))
    return table


def results_table(metrics, strategy: str, backbone: str) -> Table:
    """The run (a graft.record.RunMetrics) in one table, one row per figure: it reads at any width."""
    table = Table(title="Results")
    table.add_column("")
    table.add_column("value", justify="right")
    timings = metrics.timings
    rows = [
        ("backbone", escape(backbone)),
        ("strategy", escape(strategy)),
        ("val accuracy", f"{metrics.val_accuracy:.1%}"),
        ("test accuracy", "-" if metrics.test_accuracy is None else f"{metrics.test_accuracy:.1%}"),
        ("parameters trained", f"{metrics.params.trained:,} of {metrics.params.total:,}"),
        ("features (s)", f"{timings.get('features_s', 0.0):.1f}"),
        ("training (s)", f"{timings.get('head_s', 0.0) + timings.get('images_s', 0.0):.1f}"),
        ("total (s)", f"{timings['total_s']:.1f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
