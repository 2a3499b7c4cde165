"""`graft suggest RUN UNLABELLED/`: a thin command over graft.suggest (what to label next); with
`--label`, a page to label the suggestions (graft.labelling, served by graft.serve.labelling)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..suggest import DEFAULT_METHOD, METHODS
from .options import Overwrite, cache_dir_option
from .render import console, error_console, interrupts_explained, quote

DEFAULT_COUNT = 20
DEFAULT_LABELS = Path("labels.csv")
DEFAULT_PORT = 8000


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
    label: Annotated[bool, typer.Option("--label", help="Then open a page (on this machine only) to label the "
                                                        "suggested images: a button per class and skip, keys 1-9 "
                                                        "and s; each decision is written to --labels at once.")] = False,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="The labels CSV (path,label; default: "
                                                                    "labels.csv here): the images skipped in it "
                                                                    "(NAME.skipped.csv) are not suggested again; "
                                                                    "with --label, the file to write, or to continue "
                                                                    "where graft wrote it before. Any other file is "
                                                                    "never replaced.")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="With --label: where the page's copy button copies "
                                                                "the labelled images, DATA/train/CLASS/ (or "
                                                                "DATA/CLASS/), when you ask (default: the run's "
                                                                "training data).")] = None,
    port: Annotated[int, typer.Option(help="With --label: the page's TCP port on 127.0.0.1 (0: any free "
                                           "port).")] = DEFAULT_PORT,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="With --label: print the page's address "
                                                                  "without opening a browser.")] = False,
) -> None:
    """What to label next: the unlabelled images whose labels should help the model most.

    By default, groups the images into N clusters of similar images and suggests from each the one the
    run's model is least sure of (the smallest margin between its two most likely classes); never two
    near-duplicates, nor a near copy of a labelled image; each with its reason (uncertain, unlike the
    labelled images, or its group). Their features come from the run's backbone through graft's
    feature cache: a second call on the same images extracts nothing.

    Images skipped in an earlier labelling round (listed in labels.skipped.csv beside --labels) are
    not suggested again. With --label, a page on 127.0.0.1 shows each suggested image to label (or
    skip); the labels CSV (and the skipped list) is written after every decision, and the images are copied into DATA only when you press its
    copy button (a name already taken gets a new one; nothing is replaced). Then: graft train DATA."""
    from ..io import refuse_overwrite, write_text_atomic
    from ..labelling import skipped_file, skipped_images
    from ..suggest import check_count, suggest_for_run

    check_count(count)
    if csv_out is not None:
        refuse_overwrite([csv_out], flag="--csv", overwrite=overwrite)
    sock = _check_labelling(run, label, labels=labels, data=data, port=port, no_browser=no_browser, json_out=json_out)
    try:
        with interrupts_explained(lambda: _nothing_written(csv_out)):
            found = suggest_for_run(run, unlabelled, count=count, method=method, progress=not json_out,
                                    skipped=skipped_images(labels or DEFAULT_LABELS),
                                    skipped_from=skipped_file(labels or DEFAULT_LABELS))
    except BaseException:
        if sock is not None:
            sock.close()
        raise
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
    if sock is not None:
        _label(run, found, sock, labels=labels or DEFAULT_LABELS, data=data, browser=not no_browser)


def _nothing_written(csv_out: Path | None) -> str:
    """What a Ctrl-C while the images were ranked leaves: nothing of the user's; extracted features kept."""
    written = f"{csv_out} was not written; " if csv_out is not None else "nothing was written; "
    return written + "the features extracted so far stay in graft's cache, so the next graft suggest goes on from them."


def _check_labelling(run: Path, label: bool, *, labels: Path | None, data: Path | None, port: int, no_browser: bool,
                     json_out: bool):
    """--label's options checked before any image is read: the labels CSV one graft may write (absent, or
    graft's own; its skipped file too, read with or without --label), --data a folder of class
    folders, RUN not a multi-label run, the port free (its socket, bound on 127.0.0.1); None without --label, whose options are
    then refused."""
    from ..errors import GraftError
    from ..labelling import class_folders, read_labels_file, read_skipped_file

    read_skipped_file(labels or DEFAULT_LABELS)  # its skipped images are left out, with or without --label
    if not label:
        given = [flag for flag, value in (("--data", data), ("--no-browser", no_browser or None),
                                          ("--port", None if port == DEFAULT_PORT else port)) if value is not None]
        if given:
            raise GraftError(f"{', '.join(given)}: only with --label (the labelling page); add --label.")
        return None
    if json_out:
        raise GraftError("--json prints the suggestions for a program and --label opens a page for a person: "
                         "choose one.")
    from ..serve.server import bind

    read_labels_file(labels or DEFAULT_LABELS)
    if data is not None:
        class_folders(data)
    _refuse_multilabel(run)
    return bind("127.0.0.1", port)


def _refuse_multilabel(run: Path) -> None:
    """--label on a multi-label run: a GraftError (the page files each image under one class)."""
    from ..errors import GraftError
    from ..model_files import read_record
    from ..record import RECORD_FILE

    if Path(run).is_dir() and (Path(run) / RECORD_FILE).is_file() and read_record(run, check_weights=False)[0].task \
            == "multilabel":
        raise GraftError(f"{run} is a multi-label run, and the labelling page files each image under one class: "
                         "run graft suggest without --label, and add the suggested images' labels to the run's "
                         "label file by hand.")


def _label(run: Path, found, sock, *, labels: Path, data: Path | None, browser: bool) -> None:
    """Serve the labelling page over `found` on `sock` until Ctrl-C, then say what was done and the next step."""
    from ..labelling import LabellingSession
    from ..model_files import read_record
    from ..serve.labelling import create_labelling_app
    from ..serve.server import run as run_server
    from ..serve.server import url

    try:
        if not len(found):
            console.print("Nothing to label.")
            return
        record, _ = read_record(run, check_weights=False)
        target = data if data is not None else (Path(record.data.source) if record.data is not None else None)
        session = LabellingSession(list(found), record.classes, labels_csv=labels, data=target)
        app = create_labelling_app(session)
    except BaseException:
        sock.close()
        raise
    address = url(sock)
    continued = f", {session.continued} continued from it" if session.continued else ""
    console.print(f"Label them at [bold]{escape(address)}[/]  (Ctrl-C to stop). Each decision is written to "
                  f"{escape(str(labels))}{escape(continued)}.", soft_wrap=True)
    console.file.flush()
    if browser:
        import webbrowser

        if not webbrowser.open(address):
            error_console.print("No browser could be opened here: open the address above in one.")
    run_server(app, sock)
    copied = session.last_copy
    console.print(escape(f"{session.progress()} in {labels}."), soft_wrap=True)
    if copied is not None:
        console.print(escape(copied.message()), soft_wrap=True)
    elif session.labelled:
        where = quote(target) if target is not None else "DATA"
        console.print(escape(f"Not copied into {where}: run this command again with --label and press the page's "
                             f"copy button (the labels are continued), then: graft train {where}"), soft_wrap=True)
