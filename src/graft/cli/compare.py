"""`graft compare`: the course's frozen / unfrozen / from-scratch table, on the user's data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..compare.comparison import DEFAULT_STRATEGIES
from .options import cache_dir_option, config_options
from .render import console, interrupts_explained, say


@cache_dir_option
@config_options(exclude=("strategy", "epochs", "patience", "report", "audit", "name"))
def compare(
    data: Annotated[Path, typer.Argument(help="Training data, as for `graft train`.")],
    strategies: Annotated[str, typer.Option(help="Comma-separated strategies to run, in order (see `graft strategies`).")] = ",".join(DEFAULT_STRATEGIES),
    epochs: Annotated[int, typer.Option(help="Epochs of each strategy's main phase (the same budget for all).")] = 3,
    name: Annotated[Optional[str], typer.Option(help="Comparison folder name (default: compare-date-time).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
    **options,
) -> None:
    """Run several strategies with the same epochs and seed; write a table (Markdown, JSON) and plots.

    Every other option is `graft train`'s, the same for every strategy."""
    from ..compare import compare as run_comparison

    with interrupts_explained():
        comparison = run_comparison(data, strategies=strategies, epochs=epochs, name=name,
                                    log=None if json_out else say, progress=not json_out, **options)
    if json_out:
        print(json.dumps(comparison.to_dict(), indent=2, default=str))
        return
    console.print(comparison_table(comparison))
    say(f"Written to {comparison.folder}: compare.md, compare.json, accuracy.png, time.png, "
        "and one run folder per strategy.")


def comparison_columns(comparison) -> list[tuple[str, list[str]]]:
    """The table's columns, each (header, one value per strategy). With one epoch, "after the first" and
    "after the last" are the same figure: shown once."""
    from ..compare import num, pct

    rows, e = comparison.rows, comparison.epochs
    columns = [("val @1", [pct(row.val_acc_first) for row in rows])]
    if e > 1:
        columns.append((f"val @{e}", [pct(row.val_acc_last) for row in rows]))
    return columns + [
        ("kept val", [pct(row.best_val_acc) for row in rows]),
        ("test", [pct(row.test_acc) for row in rows]),
        ("s/epoch", [num(row.epoch_time_s, ".1f") for row in rows]),
        ("total s", [f"{row.total_s:.0f}" for row in rows]),
        ("trained params", [f"{row.trainable_params:,}" for row in rows]),
        ("peak MB", [num(row.peak_rss_mb, ".0f") for row in rows]),
    ]


def comparison_table(comparison, width: int | None = None) -> RenderableType:
    """The comparison for a terminal `width` columns wide (default: the console's), every header and
    value whole: one row per strategy where that fits; else one column per strategy (the figures as
    rows); else, in the narrowest terminals, one block of lines per strategy."""
    width = width or console.width
    title = f"{comparison.epochs} epoch{'s' if comparison.epochs != 1 else ''} each, seed {comparison.seed}"
    columns = comparison_columns(comparison)
    names = [escape(row.strategy) for row in comparison.rows]
    wide = Table(title=title)
    wide.add_column("strategy", no_wrap=True)
    for header, _ in columns:
        wide.add_column(header, justify="right", no_wrap=True)
    for index, name in enumerate(names):
        wide.add_row(name, *(values[index] for _, values in columns))
    if _fits(wide, width):
        return wide
    turned = Table(title=title)
    turned.add_column("", no_wrap=True)
    for name in names:
        turned.add_column(name, justify="right", no_wrap=True)
    for header, values in columns:
        turned.add_row(header, *values)
    if _fits(turned, width):
        return turned
    lines = [title]
    for index, name in enumerate(names):
        lines += [f"[bold]{name}[/]", *(f"  {header}: {values[index]}" for header, values in columns)]
    return Text.from_markup("\n".join(lines))


def _fits(table: Table, width: int) -> bool:
    """Whether `table` shows whole (no column squeezed or cut) in `width` columns."""
    from rich.measure import Measurement

    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum  # unconstrained
    return natural <= width


def register(app: typer.Typer) -> None:
    app.command()(compare)
