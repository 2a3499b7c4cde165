"""`graft explain RUN IMAGE...`: a thin command over graft.explain (class activation maps, and what the
layers inside respond to: --feature-maps, --channels)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import GraftError
from .options import Backbone, Overwrite, Weights, cache_dir_option
from .render import console, error_console, quote, say


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the `graft` app."""
    app.command("explain")(explain)


@cache_dir_option
def explain(
    target: Annotated[list[str], typer.Argument(help="RUN IMAGE... (or just IMAGE... with --imagenet; just RUN with --channels).")],
    class_name: Annotated[Optional[str], typer.Option("--class", help="Class to explain (default: each image's predicted class).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the PNGs (default: RUN/explain/, or explain/ with --imagenet).")] = None,
    imagenet: Annotated[bool, typer.Option(help="Explain the backbone's untouched ImageNet head (1,000 classes).")] = False,
    backbone: Backbone = "tf_efficientnet_lite0",
    weights: Weights = "imagenet",
    method: Annotated[str, typer.Option(help="auto (CAM for a linear head on pooled features, else Grad-CAM), cam or grad-cam.")] = "auto",
    feature_maps: Annotated[bool, typer.Option("--feature-maps", help="Instead of class maps: for each stage, its strongest channels' activation maps over each image.")] = False,
    channels: Annotated[bool, typer.Option("--channels", help="The training images that activate a stage's strongest channels most (RUN only, no IMAGE).")] = False,
    stage: Annotated[int, typer.Option(help="With --channels: the stage (0 is the first; -1, the default, the last).")] = -1,
    images: Annotated[Optional[int], typer.Option("--images", help="With --channels: rank a stratified sample of this many training images (default: all).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Class activation maps: for each image, a PNG of the image beside where the model sees the class.

    --feature-maps shows what each stage of the backbone responds to in each image; --channels, the
    training images that activate a stage's channels most (Zeiler and Fergus). An image that cannot
    be read is reported (path and reason) and the others are still explained; the exit status is
    then 1. A PNG in a folder named with --out is replaced only with --overwrite."""
    from ..explain import explain as explain_images

    if feature_maps and channels:
        raise GraftError("--feature-maps and --channels are two different pictures: give one of them.")
    if not channels and (stage != -1 or images is not None):
        raise GraftError("--stage and --images choose what --channels ranks: add --channels (graft explain RUN --channels --stage K).")
    replace = out is None or overwrite  # graft's own folder (RUN/explain), or the user's with --overwrite
    if channels:
        _channels(target, out=out, imagenet=imagenet, stage=stage, images=images, json_out=json_out, overwrite=replace)
        return
    if imagenet:
        image_paths, folder = target, Path("explain")
    elif len(target) < 2:
        raise GraftError("Give a run folder and at least one image: graft explain runs/NAME photo.jpg (or use --imagenet; "
                         "for a run's channels, graft explain runs/NAME --channels).")
    else:
        run, image_paths = Path(target[0]), target[1:]
        folder = (run if run.is_dir() else run.parent) / "explain"
    readable, unread = _read_first(image_paths)
    if imagenet:
        from ..explain import imagenet_classifier

        classifier = imagenet_classifier(backbone, weights)
    else:
        from ..classifier import load

        classifier = load(run)
    if feature_maps:
        from ..explain import feature_maps as draw_feature_maps

        drawn = draw_feature_maps(classifier, readable, out_dir=out or folder, overwrite=replace)
        if json_out:
            _print_json([result.to_dict() for result in drawn], image_paths, unread)
        else:
            for drawing in drawn:
                stages = ", ".join(f"{s.stage.index}: {s.size[0]}x{s.size[1]}x{s.stage.channels}" for s in drawing.stages)
                console.print(f"[bold]{escape(drawing.path)}[/] -> {escape(str(drawing.png))}\n  stages {escape(stages)}")
    else:
        results = explain_images(classifier, readable, class_name=class_name, out_dir=out or folder, method=method,
                                 overwrite=replace)
        if json_out:
            _print_json([r.to_dict() for r in results], image_paths, unread)
        else:
            for result in results:
                predicted = ("" if result.predicted == result.class_name
                             else f" (predicted: {result.predicted}, {result.predicted_probability:.1%})")
                console.print(f"[bold]{escape(result.path)}[/] -> {escape(str(result.png))}\n"
                              f"  {result.method} for {escape(result.class_name)}: {result.probability:.1%}{escape(predicted)}")
    if unread:
        _report_unread(unread)
        sys.exit(1)


def _read_first(images: list[str]) -> tuple[list[str], dict[str, str]]:
    """Every image read before the model is loaded: the readable ones, and why each other one is not
    (a GraftError when none can be read)."""
    from ..data.images import load_image
    from ..errors import BadImageError

    unread: dict[str, str] = {}
    for image in images:
        try:
            load_image(image)
        except BadImageError as error:
            unread[image] = error.reason
    readable = [image for image in images if image not in unread]
    if not readable:
        raise GraftError("No image could be read: " + "; ".join(f"{image}: {reason}" for image, reason in unread.items()))
    return readable, unread


def _print_json(explained: list[dict], images: list[str], unread: dict[str, str]) -> None:
    """The explanations as JSON, in the order the images were given, each unread one as {path, error}."""
    answers = iter(explained)
    print(json.dumps([{"path": image, "error": unread[image]} if image in unread else next(answers) for image in images],
                     indent=2))


def _report_unread(unread: dict[str, str]) -> None:
    for image, reason in unread.items():
        error_console.print(f"[bold red]not read:[/] {escape(image)}: {escape(reason)}")


def _channels(target: list[str], *, out: Path | None, imagenet: bool, stage: int, images: int | None, json_out: bool,
              overwrite: bool) -> None:
    """`graft explain RUN --channels`: rank the run's training images by a stage's channels."""
    from ..classifier import load
    from ..explain import run_top_channels

    if imagenet:
        raise GraftError("--channels ranks a run's training images: give a run folder, not --imagenet.")
    if len(target) != 1:
        raise GraftError("--channels takes a run folder and no image: graft explain runs/NAME --channels [--stage K].")
    run = Path(target[0])
    classifier = load(run)
    result = run_top_channels(classifier, stage=stage, images=images, progress=not json_out, overwrite=overwrite,
                              out_dir=out or (run if run.is_dir() else run.parent) / "explain")
    if json_out:
        print(json.dumps(result.to_dict(), indent=2))
        return
    table = Table(title=escape(f"Stage {result.stage.index} ({result.stage.module}, {result.stage.channels} channels): "
                               f"strongest channels over {result.images:,} training images"))
    for column in ("channel", "strength", "top images (class, activation)"):
        table.add_column(column, justify="left" if column.startswith("top") else "right")
    for channel in result.channels:
        tops = ", ".join(f"{top.label} {top.activation:.2f}" for top in channel.images)
        table.add_row(str(channel.channel), f"{channel.strength:.2f}", escape(tops))
    console.print(table)
    source = "read from the feature cache" if result.cached else "computed in one pass and cached for next time"
    say(f"Activations {source}. Figure: {result.png}")
    if result.stage.index > 0:
        say(f"Earlier stage: graft explain {quote(run)} --channels --stage {result.stage.index - 1}")


def layers_table(table, *, title: str) -> Table:
    """`graft summary --layers`: graft.explain.layers' LayerTable as a Rich table."""
    grouped = table.depth is not None
    size = " x ".join(str(s) for s in table.input_size)
    shown = Table(title=f"{title}: layers" + (f" (depth {table.depth})" if grouped else "") + f", input {size}")
    for column in ("layer", "type", "output shape", "parameters", "trains", "stage", "formula"):
        shown.add_column(column, justify="right" if column in ("parameters", "stage") else "left", overflow="fold",
                         no_wrap=column in ("output shape", "parameters", "trains", "stage"))
    for row in table.rows:
        trains = "-" if not row.parameters else ("yes" if row.trainable == row.parameters else
                                                 "no" if not row.trainable else f"{row.trainable:,}")
        last = f"({row.members} layers)" if grouped and row.members > 1 else row.formula
        shown.add_row(escape(row.name), escape(row.kind), row.shape, f"{row.parameters:,}", trains, row.stage, escape(last))
    shown.caption = (f"{len(table.rows)} rows, {table.parameters:,} parameters ({table.trainable:,} trainable); "
                     "output shapes are channels x height x width (tokens x width for transformers)")
    return shown
