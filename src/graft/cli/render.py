"""What the terminal shows, for every command: the consoles, plain lines, Rich tables (results,
per-class metrics, confusion matrices), and how an error or a Ctrl-C is told."""

from __future__ import annotations

import shlex
import sys
from contextlib import contextmanager
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


@contextmanager
def interrupts_explained(describe=None):
    """Ctrl-C in a command: say what it interrupted and what was kept (the interrupt's own `describe`,
    as a run's says where its folder is, else the `describe()` given here), then exit 130.

    (Typer turns a bare KeyboardInterrupt into a silent exit before `main` could see it.)"""
    try:
        yield
    except KeyboardInterrupt as interrupt:
        told = getattr(interrupt, "describe", None) or describe
        error_console.print("[yellow]interrupted[/]: " + escape(told() if told else "nothing was saved."))
        sys.exit(130)


def describe_os_error(error: OSError) -> str:
    """What failed, on which file, and what to do: for the errors a user can fix."""
    import errno

    where = f"{error.filename}: " if error.filename else ""
    what = error.strerror or str(error)
    hints = {
        errno.ENOSPC: "The disk is full; free some space, or write elsewhere (--out for runs, --cache-dir or GRAFT_CACHE for the cache).",
        errno.EDQUOT: "Your disk quota is used up; free some space, or write elsewhere (--out, --cache-dir or GRAFT_CACHE).",
        errno.EACCES: "graft may not write there; choose a folder you can write to (--out for runs, --cache-dir or GRAFT_CACHE for the cache).",
        errno.EROFS: "That file system is read-only; choose another folder (--out for runs, --cache-dir or GRAFT_CACHE for the cache).",
        errno.ENOTDIR: "A file stands where graft needs a folder; move that file, or write elsewhere.",
        errno.EEXIST: "A file stands where graft needs a folder; move that file, or write elsewhere.",
        errno.EFBIG: "The file would be larger than this system lets graft write: a file-size limit (`ulimit -f`; "
                     "`ulimit -f unlimited` lifts it) or a file system with small files (FAT32 holds 4 GB at most); "
                     "lift the limit, or write elsewhere (--out, --cache-dir or GRAFT_CACHE).",
    }
    return f"{where}{what}. {hints.get(error.errno or 0, 'Check the path and try again.')}"


def evaluation_tables(evaluation, title: str) -> list[Table]:
    """A split's evaluation as tables: per class, and the confusion matrix (single-label data), or the
    per-class AP and decisions at each threshold (multi-label data: graft.evaluation.MultiLabelEvaluation)."""
    if not isinstance(evaluation, Evaluation):
        columns, rows = evaluation.table()
        table = Table(title=f"{escape(title)}: {escape(evaluation.summary())}")
        for column in columns:
            table.add_column(escape(column), justify="left" if column == columns[0] else "right")
        for row in rows:
            table.add_row(*(escape(str(cell)) for cell in row))
        return [table]
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
    figure = "accuracy" if isinstance(metrics.val, Evaluation) else "mAP (macro)"  # multi-label data's primary figure
    rows = [
        ("backbone", escape(backbone)),
        ("strategy", escape(strategy)),
        (f"val {figure}", f"{metrics.val_accuracy:.1%}"),
        (f"test {figure}", "-" if metrics.test_accuracy is None else f"{metrics.test_accuracy:.1%}"),
        ("parameters trained", f"{metrics.params.trained:,} of {metrics.params.total:,}"),
        ("features (s)", f"{timings.get('features_s', 0.0):.1f}"),
        ("training (s)", f"{timings.get('head_s', 0.0) + timings.get('images_s', 0.0):.1f}"),
        ("total (s)", f"{timings['total_s']:.1f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
