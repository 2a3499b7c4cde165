"""`graft explain`: one PNG per image, the image beside the activation map of a class."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..backbones import DEFAULT_BACKBONE, create_backbone
from ..classifier import Classifier
from ..errors import GraftError
from ..io import refuse_overwrite
from ..model import GraftModel
from ..plotting import write_png
from .cam import activation_maps
from .figures import MapPair, map_pairs_figure
from .overlay import model_inputs, model_view

BATCH = 16  # images per forward pass: the maps need the whole feature map in memory


@dataclass
class Explanation:
    path: str  # the image explained
    png: Path  # the figure written
    class_name: str  # the class whose evidence the map shows
    probability: float  # of that class
    predicted: str
    predicted_probability: float
    method: str  # CAM or Grad-CAM

    def to_dict(self) -> dict:
        return {**self.__dict__, "png": str(self.png)}


def explain(
    classifier: Classifier,
    images: Sequence[str | Path],
    *,
    class_name: str | None = None,
    out_dir: str | Path,
    method: str = "auto",
    colormap: str = "jet",
    overwrite: bool = True,
) -> list[Explanation]:
    """Write `out_dir/<image>-<class>.png` for each image: the image as the model saw it, and the map.

    The map explains `class_name`, or else each image's predicted class. An unknown class name
    raises a GraftError before anything is computed; an unreadable image, a BadImageError naming it.
    `overwrite=False` (graft explain --out, without --overwrite) refuses, with a GraftError naming
    it, a PNG that exists already, before any PNG of its batch is written.
    """
    target = None if class_name is None else find_class(classifier.classes, class_name)
    config = classifier.data_config
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    explanations: list[Explanation] = []
    used: set[str] = set()
    several = getattr(classifier, "task", "single") == "multilabel"
    for start in range(0, len(images), BATCH):
        batch = model_inputs(images[start : start + BATCH], config)
        chosen = None if target is None else torch.full((len(batch),), target)
        choose = partial(_labels_given, classifier.decision_thresholds()) if several and target is None else None
        maps = activation_maps(classifier.model, batch, classes=chosen, method=method, choose=choose)
        assert maps.rows is not None  # activation_maps names each map's image
        rows = maps.rows.tolist()  # a multi-label image has a map for every label it is given
        batch = batch[maps.rows]
        probabilities = maps.logits.sigmoid() if several and maps.logits is not None else maps.probabilities
        results = []
        for offset, row in enumerate(rows):
            path = Path(images[start + row])
            explained, predicted = int(maps.classes[offset]), int(probabilities[offset].argmax())
            name = classifier.classes[explained]
            results.append(Explanation(
                path=str(path), png=out_dir / _unique(f"{path.stem}-{_slug(name)}.png", used), class_name=name,
                probability=float(probabilities[offset, explained]), predicted=classifier.classes[predicted],
                predicted_probability=float(probabilities[offset, predicted]), method=maps.method,
            ))
        refuse_overwrite([result.png for result in results], flag="--out", overwrite=overwrite)
        for offset, (image, result) in enumerate(zip(batch, results)):
            write_png(_figure(result, model_view(image, config), maps.maps[offset].numpy(), colormap=colormap), result.png)
        explanations += results
    return explanations


def _labels_given(thresholds: np.ndarray, logits: torch.Tensor) -> tuple[list[int], list[int]]:
    """A multi-label model's answers from its logits (B x classes): (image rows, classes), a pair for
    every label at or over its threshold (graft.evaluation.decide), the most likely class where none
    is; images in order, each image's labels most likely first."""
    from ..evaluation.thresholds import decide

    probabilities = logits.sigmoid().numpy()
    given = decide(probabilities, thresholds)
    pairs = [(row, column) for row in range(len(logits))
             for column in (sorted((int(c) for c in np.flatnonzero(given[row])), key=lambda c: -probabilities[row, c])
                            or [int(probabilities[row].argmax())])]
    return [row for row, _ in pairs], [column for _, column in pairs]


def _figure(result: Explanation, view, heatmap, *, colormap: str):
    pair = MapPair(
        view=view,
        heatmap=heatmap,
        image_title=f"Input as the model saw it ({view.width} x {view.height} px)",
        map_title=f"{result.method}: where it sees “{result.class_name}”",
        note=Path(result.path).name,
    )
    title = (f"{result.method} for “{result.class_name}” ({result.probability:.1%}); "
             f"predicted: {result.predicted} ({result.predicted_probability:.1%})")
    return map_pairs_figure([pair], title=title, colormap=colormap)


def find_class(classes: Sequence[str], name: str) -> int:
    """The index of class `name`: its exact name, else a case-insensitive match of the name or of one
    of its comma-separated synonyms (ImageNet's "tabby, tabby cat" answers to "tabby cat")."""
    if name in classes:
        return list(classes).index(name)
    wanted = name.strip().lower()
    for index, known in enumerate(classes):
        if wanted == known.lower() or wanted in (part.strip().lower() for part in known.split(",")):
            return index
    close = difflib.get_close_matches(name, list(classes), n=8, cutoff=0.5)
    if len(classes) <= 30:
        hint = f" Classes: {', '.join(classes)}."
    else:
        hint = (f" Close names: {', '.join(close)}." if close else " No class name is close.") + f" ({len(classes)} classes in all.)"
    raise GraftError(f"--class {name!r}: the model has no such class.{hint}")


def imagenet_classifier(backbone_name: str = DEFAULT_BACKBONE, weights: str = "imagenet") -> Classifier:
    """The backbone with its own, untouched ImageNet head, as a graft Classifier of 1,000 named classes."""
    from timm.data import ImageNetInfo

    from ..backbones.backbone import build_timm_model
    from ..backbones.weights import load_pretrained

    full = build_timm_model(backbone_name)
    load_pretrained(full, backbone_name, weights)  # create_backbone drops the classifier: take it first
    top: nn.Module = full.get_classifier()
    if not isinstance(top, nn.Linear) or top.out_features != 1000:
        raise GraftError(f"{backbone_name}'s ImageNet classifier is not one Linear layer with 1000 outputs "
                         f"({type(top).__name__}); use another backbone, e.g. {DEFAULT_BACKBONE}.")
    net = create_backbone(backbone_name, weights=weights)
    model = GraftModel(net, nn.Sequential(top)).eval()
    info = ImageNetInfo()
    classes = [info.index_to_description(i) for i in range(top.out_features)]
    return Classifier(model, classes)


def _slug(name: str) -> str:
    return re.sub(r"[^\w-]+", "_", name.split(",")[0].strip()).strip("_") or "class"


def _unique(filename: str, used: set[str]) -> str:
    """Two images with the same name (from different folders) must not overwrite each other's PNG."""
    stem, suffix = filename.rsplit(".", 1)
    candidate, index = filename, 2
    while candidate in used:
        candidate, index = f"{stem}-{index}.{suffix}", index + 1
    used.add(candidate)
    return candidate
