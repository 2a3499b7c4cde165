"""`graft audit DATA`: a thin command over graft.audit, which checks a dataset before training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .options import ImgSize, Overwrite, ValSplit, Weights, Workers, cache_dir_option
from .render import console

if TYPE_CHECKING:
    from ..audit import AuditResult


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the `graft` app."""
    app.command("audit")(audit)


@cache_dir_option
def audit(
    data: Annotated[Path, typer.Argument(help="Folder with train/ and val/ (and optional test/) class folders, a folder of class folders, or a CSV of path,label.")],
    backbone: Annotated[str, typer.Option("--backbone", "-b", help="Any timm model name: its features decide what looks alike.")] = "tf_efficientnet_lite0",
    weights: Weights = "imagenet",
    img_size: ImgSize = None,
    val_split: ValSplit = 0.2,
    seed: Annotated[int, typer.Option(help="Random seed (the val split, the folds of the label check).")] = 0,
    duplicate_threshold: Annotated[float | None, typer.Option(help="Cosine similarity from which two images count as duplicates (default: calibrated, see docs/audit.md).")] = None,
    mislabel_confidence: Annotated[float | None, typer.Option(help="Probability of another class from which an image counts as mislabelled (default: calibrated).")] = None,
    near_duplicate_threshold: Annotated[float | None, typer.Option(help="Cosine similarity from which two images of one split count as near-identical (default: measured, see docs/audit.md).")] = None,
    redundant: Annotated[Path | None, typer.Option("--redundant", help="Write the near-identical images that could be dropped (all but one of each group within train or val) to this file, one path a line. graft deletes nothing.")] = None,
    workers: Workers = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the findings to this JSON file.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Check DATA before training: near-duplicate images across train/val/test, near-identical images within train or val, class imbalance, likely mislabelled images."""
    from ..audit import DUPLICATE_THRESHOLD, MISLABEL_CONFIDENCE, NEAR_DUPLICATE_THRESHOLD
    from ..audit import audit as run_audit
    from ..io import refuse_overwrite, write_json_atomic, write_text_atomic

    if output is not None:
        refuse_overwrite([output], flag="--output", overwrite=overwrite)
    if redundant is not None:
        refuse_overwrite([redundant], flag="--redundant", overwrite=overwrite)

    result = run_audit(
        data, backbone=backbone, weights=weights, img_size=img_size, val_split=val_split, seed=seed,
        workers=workers, progress=not json_out,
        duplicate_threshold=DUPLICATE_THRESHOLD if duplicate_threshold is None else duplicate_threshold,
        mislabel_confidence=MISLABEL_CONFIDENCE if mislabel_confidence is None else mislabel_confidence,
        near_duplicate_threshold=NEAR_DUPLICATE_THRESHOLD if near_duplicate_threshold is None else near_duplicate_threshold,
    )
    if output is not None:
        write_json_atomic(output, result.to_dict())
    if redundant is not None:
        write_text_atomic(redundant, "".join(f"{path}\n" for path in result.redundant()))
    if json_out:
        print(json.dumps(result.to_dict(), indent=2))
        return
    print_result(result)
    if output is not None:
        console.print(f"Written to {escape(str(output))}")
    if redundant is not None:
        console.print(f"{len(result.redundant()):,} near-identical images that could be dropped listed in "
                      f"{escape(str(redundant))}")


def print_result(result: AuditResult) -> None:
    """The four checks, each a one-line verdict and, when it found something, a table."""
    from ..audit.result import SHOWN_ROWS, TITLES

    settings = result.settings
    images = ", ".join(f"{count:,} {split}" for split, count in settings.get("images", {}).items() if count)
    console.print(f"[bold]Data audit[/] of {escape(str(settings.get('source', '')))} ({images}); features of "
                  f"{escape(str(settings.get('backbone', '?')))} at {settings.get('img_size', '?')} px")
    verdicts = result.verdicts()
    for key, (header, rows) in result.tables().items():
        colour = "yellow" if rows or (key == "mislabelled" and result.label_check_skipped) else "green"
        if key == "mislabelled" and rows and result.weak_label_check:
            colour = "default"  # its guesses on little data: said as such, not as an alarm
        console.print(f"\n[bold]{TITLES[key]}[/]: [{colour}]{escape(verdicts[key])}[/]")
        if not rows:
            continue
        table = Table(*header)
        for row in rows[:SHOWN_ROWS]:
            table.add_row(*(escape(str(cell)) for cell in row))
        console.print(table)
        if len(rows) > SHOWN_ROWS:
            console.print(f"... and {len(rows) - SHOWN_ROWS:,} more (--json or --output FILE lists them all).")
    for note in result.notes:
        console.print(f"[dim]Note: {escape(note)}[/]")
    console.print(f"\n{escape(result.summary())}")
