"""`graft similar RUN|DATA IMAGE...`: a thin command over graft.similar (the training images nearest to an image)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..similar import DEFAULT_COUNT
from .options import ImgSize, ValSplit, Weights, Workers, cache_dir_option
from .render import console, error_console, interrupts_explained


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the `graft` app."""
    app.command("similar")(similar)


@cache_dir_option
def similar(
    source: Annotated[Path, typer.Argument(help="A run folder (graft train's: its backbone and training images) or a data folder.")],
    images: Annotated[list[Path], typer.Argument(help="One or more image files.")],
    count: Annotated[int, typer.Option("--count", "-k", help="How many similar training images to list per image.")] = DEFAULT_COUNT,
    backbone: Annotated[Optional[str], typer.Option("--backbone", "-b", help="With a data folder: any timm model name, whose features decide what looks alike (default: graft's default backbone).")] = None,
    weights: Weights = "imagenet",
    img_size: ImgSize = None,
    val_split: ValSplit = 0.2,
    seed: Annotated[int, typer.Option(help="With a data folder: the random seed of its val split.")] = 0,
    workers: Workers = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the answers as JSON.")] = False,
) -> None:
    """The training images most like each IMAGE: class, cosine similarity of the backbone's features (1: the same picture) and path.

    An image that cannot be read is named and the others are answered (exit status 1), as in predict."""
    from ..similar import similar as find_similar

    with interrupts_explained(lambda: "nothing was written; features extracted so far stay in graft's cache."):
        found = find_similar(source, [str(image) for image in images], count=count, backbone=backbone,
                             weights=weights, img_size=img_size, val_split=val_split, seed=seed, workers=workers,
                             progress=not json_out)
    if json_out:
        print(json.dumps([answer.to_dict() for answer in found], indent=2))
    else:
        _show(found)
    if any(answer.error is not None for answer in found):
        raise typer.Exit(1)


def _show(found) -> None:
    """Each answer's table, or the reason its image cannot be read."""
    for answer in found:
        if answer.error is not None:
            error_console.print(f"[red]error[/]: {escape(str(answer.image))} cannot be read as an image: "
                                f"{escape(answer.error)}")
            continue
        table = Table(title=escape(f"Training images most like {answer.image}"))
        for column in ("rank", "similarity", "class", "file"):
            table.add_column(column, justify="right" if column in ("rank", "similarity") else "left")
        for match in answer.matches:
            table.add_row(str(match.rank), f"{match.similarity:.3f}", escape(match.label), escape(str(match.path)))
        console.print(table)
