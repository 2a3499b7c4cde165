"""`graft suggest RUN UNLABELLED/`: a thin command over graft.suggest (what to label next)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..suggest import DEFAULT_METHOD, METHODS
from .options import Overwrite, cache_dir_option
from .render import console

DEFAULT_COUNT = 20


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the `graft` app."""
    app.command("suggest")(suggest)


@cache_dir_option
def suggest(
    run: Annotated[Path, typer.Argument(help="A run folder (graft train's).")],
    unlabelled: Annotated[list[str], typer.Argument(help="Folders, files or glob patterns of unlabelled images.")],
    count: Annotated[int, typer.Option("--count", "-n", help="How many images to suggest.")] = DEFAULT_COUNT,
    method: Annotated[str, typer.Option(help=f"How to rank them: {', '.join(METHODS)} (default {DEFAULT_METHOD}: "
                                              "the least certain image of each of N groups of similar images; chosen by measurement, "
                                              "docs/benchmarks.md).")] = DEFAULT_METHOD,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="Also write the suggestions to this CSV file "
                                                                   "(rank,path,reason and the numbers behind it).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the suggestions as JSON.")] = False,
    overwrite: Overwrite = False,
) -> None:
    """What to label next: the unlabelled images whose labels should help the model most.

    By default, groups the images into N clusters of similar images and suggests from each the one the
    run's model is least sure of (the smallest margin between its two most likely classes); never two
    near-duplicates, nor a near copy of a labelled image; each with its reason (uncertain, unlike the
    labelled images, or its group). Their features come from the run's backbone through graft's
    feature cache: a second call on the same images extracts nothing."""
    from ..io import refuse_overwrite, write_text_atomic
    from ..suggest import check_count, suggest_for_run

    check_count(count)
    if csv_out is not None:
        refuse_overwrite([csv_out], flag="--csv", overwrite=overwrite)
    found = suggest_for_run(run, unlabelled, count=count, method=method, progress=not json_out)
    if csv_out is not None:
        write_text_atomic(csv_out, found.csv_text())
    if json_out:
        print(json.dumps({"method": found.method, "images": found.images, "notes": found.notes,
                          "suggestions": [item.to_dict() for item in found]}, indent=2))
        return
    if len(found):
        table = Table(title=escape(f"Label these {len(found):,} of {found.images:,} unlabelled images first "
                                   f"({found.method})"))
        for column in ("rank", "file", "reason"):
            table.add_column(column, justify="right" if column == "rank" else "left")
        for item in found:
            table.add_row(str(item.rank), escape(str(item.path)), escape(item.reason))
        console.print(table)
    else:
        console.print(f"No image to suggest among the {found.images:,} unlabelled images.")
    for note in found.notes:
        console.print(f"[dim]Note: {escape(note)}[/]")
    if csv_out is not None:
        console.print(f"Written to {escape(str(csv_out))}")
