"""`graft explain RUN IMAGE...`: a thin command over graft.explain (class activation maps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..errors import GraftError
from .options import Backbone, Weights
from .render import console


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the `graft` app."""
    app.command("explain")(explain)


def explain(
    target: Annotated[list[str], typer.Argument(help="RUN IMAGE... (or just IMAGE... with --imagenet).")],
    class_name: Annotated[Optional[str], typer.Option("--class", help="Class to explain (default: each image's predicted class).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the PNGs (default: RUN/explain/, or explain/ with --imagenet).")] = None,
    imagenet: Annotated[bool, typer.Option(help="Explain the backbone's untouched ImageNet head (1,000 classes).")] = False,
    backbone: Backbone = "tf_efficientnet_lite0",
    weights: Weights = "imagenet",
    method: Annotated[str, typer.Option(help="auto (CAM for a linear head on pooled features, else Grad-CAM), cam or grad-cam.")] = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Class activation maps: for each image, a PNG of the image beside where the model sees the class."""
    from ..data.images import load_image
    from ..explain import explain as explain_images

    if imagenet:
        images, folder = target, Path("explain")
    elif len(target) < 2:
        raise GraftError("Give a run folder and at least one image: graft explain runs/NAME photo.jpg (or use --imagenet).")
    else:
        run, images = Path(target[0]), target[1:]
        folder = (run if run.is_dir() else run.parent) / "explain"
    for image in images:  # check every image first: one bad file should not waste a model load
        load_image(image)
    if imagenet:
        from ..explain import imagenet_classifier

        classifier = imagenet_classifier(backbone, weights)
    else:
        from ..classifier import load

        classifier = load(run)
    results = explain_images(classifier, images, class_name=class_name, out_dir=out or folder, method=method)
    if json_out:
        print(json.dumps([r.to_dict() for r in results], indent=2))
        return
    for result in results:
        predicted = "" if result.predicted == result.class_name else f" (predicted: {result.predicted}, {result.predicted_probability:.1%})"
        console.print(f"[bold]{escape(result.path)}[/] -> {escape(str(result.png))}\n"
                      f"  {result.method} for {escape(result.class_name)}: {result.probability:.1%}{escape(predicted)}")
