"""`graft compare`: the course's frozen / unfrozen / from-scratch table, on the user's data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

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


def comparison_table(comparison) -> Table:
    from ..compare import num, pct

    table = Table(title=f"{comparison.epochs} epochs each, seed {comparison.seed}")
    e = comparison.epochs
    columns = ("strategy", "val @1", f"val @{e}", "kept val", "test", "s/epoch", "total s", "trained params", "peak MB")
    for column in columns:
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for row in comparison.rows:
        table.add_row(escape(row.strategy), pct(row.val_acc_first), pct(row.val_acc_last), pct(row.best_val_acc),
                      pct(row.test_acc), num(row.epoch_time_s, ".1f"), f"{row.total_s:.0f}",
                      f"{row.trainable_params:,}", num(row.peak_rss_mb, ".0f"))
    return table


def register(app: typer.Typer) -> None:
    app.command()(compare)
