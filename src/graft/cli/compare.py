"""`graft compare`: the course's frozen / unfrozen / from-scratch table, on the user's data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .options import Backbone, ImgSize, Precision, ValSplit, Weights, Workers
from .render import console


def compare(
    data: Annotated[Path, typer.Argument(help="Training data, as for `graft train`.")],
    strategies: Annotated[str, typer.Option(help="Comma-separated strategies to run, in order.")] = "linear-probe,feature-extract,finetune,scratch",
    epochs: Annotated[int, typer.Option(help="Epochs of each strategy's main phase (the same budget for all).")] = 3,
    head_epochs: Annotated[int, typer.Option(help="finetune/partial: head warm-up epochs on cached features.")] = 15,
    backbone: Backbone = "tf_efficientnet_lite0",
    weights: Weights = "imagenet",
    img_size: ImgSize = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 32,
    lr: Annotated[float, typer.Option(help="Learning rate of the head.")] = 1e-3,
    backbone_lr_ratio: Annotated[float, typer.Option(help="Backbone learning rate as a fraction of --lr.")] = 0.1,
    views: Annotated[int, typer.Option(help="Augmented views per image cached for head phases.")] = 3,
    val_split: ValSplit = 0.2,
    seed: Annotated[int, typer.Option(help="Random seed, the same for every strategy.")] = 0,
    precision: Precision = "auto",
    workers: Workers = None,
    out: Annotated[Path, typer.Option(help="Folder for the comparison folder.")] = Path("runs"),
    name: Annotated[Optional[str], typer.Option(help="Comparison folder name (default: compare-date-time).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """Run several strategies with the same epochs and seed; write a table (Markdown, JSON) and plots."""
    from ..compare import compare as run_comparison

    log = None if json_out else (lambda text: console.print(escape(text)))
    comparison = run_comparison(
        data, strategies=[s.strip() for s in strategies.split(",") if s.strip()], epochs=epochs,
        head_epochs=head_epochs, seed=seed, out=out, name=name, log=log, backbone=backbone, weights=weights,
        img_size=img_size, batch_size=batch_size, lr=lr, backbone_lr_ratio=backbone_lr_ratio, views=views,
        val_split=val_split, precision=precision, workers=workers, progress=not json_out,
    )
    if json_out:
        print(json.dumps(comparison.to_dict(), indent=2, default=str))
        return
    console.print(comparison_table(comparison))
    console.print(f"Written to [bold]{comparison.folder}[/]: compare.md, compare.json, accuracy.png, time.png, "
                  "and one run folder per strategy.")


def comparison_table(comparison) -> Table:
    from ..compare import num, pct

    table = Table(title=f"{comparison.epochs} epochs each, seed {comparison.seed}")
    e = comparison.epochs
    columns = ("strategy", "val @1", f"val @{e}", "kept val", "test", "s/epoch", "total s", "trained params", "peak MB")
    for column in columns:
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for row in comparison.rows:
        table.add_row(row.strategy, pct(row.val_acc_first), pct(row.val_acc_last), pct(row.best_val_acc),
                      pct(row.test_acc), num(row.epoch_time_s, ".1f"), f"{row.total_s:.0f}",
                      f"{row.trainable_params:,}", num(row.peak_rss_mb, ".0f"))
    return table


def register(app: typer.Typer) -> None:
    app.command()(compare)
