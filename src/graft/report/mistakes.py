"""The most confident mistakes: wrong answers given with the highest probability, with their maps.

They are where a model is most misleading, and often where the data is wrong: a mislabelled image
is "mistaken" with high confidence for its true class.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..data.discover import Sample
from ..model import GraftModel

if TYPE_CHECKING:  # graft.explain (and matplotlib with it) is imported where a map is drawn
    from ..explain import MapPair

MISTAKES_SHOWN = 8


@dataclass
class Mistake:
    path: str
    true: str
    predicted: str
    probability: float  # of the predicted class
    maps: _Maps = field(repr=False, compare=False)  # shared by the mistakes of one call
    row: int = 0  # this mistake's place among them

    @property
    def method(self) -> str:
        """How the map was made: CAM or Grad-CAM."""
        return self.maps.computed()[0]

    @property
    def pair(self) -> MapPair:
        """The image as the model saw it and the map of the predicted class."""
        return self.maps.computed()[1][self.row]

    def to_dict(self) -> dict:
        return {"path": self.path, "true": self.true, "predicted": self.predicted, "probability": self.probability,
                "method": self.method}


class _Maps:
    """The activation maps of some mistakes, computed in one batch when first asked for: a report
    whose mistakes figure comes from graft's cache (graft.report.cache) never computes them."""

    def __init__(self, model: GraftModel, mistakes: list[tuple[str, int, str, str, float]]):
        self.model, self.mistakes = model, mistakes  # (path, predicted index, true, predicted, probability)
        self._computed: tuple[str, list[MapPair]] | None = None

    def computed(self) -> tuple[str, list[MapPair]]:
        if self._computed is None:
            from ..explain import MapPair, activation_maps, model_inputs, model_view

            config = self.model.backbone.data_config
            inputs = model_inputs([path for path, *_ in self.mistakes], config)
            maps = activation_maps(self.model, inputs, classes=torch.tensor([index for _, index, *_ in self.mistakes]))
            pairs = []
            for row, (path, _, true, guess, probability) in enumerate(self.mistakes):
                pairs.append(MapPair(view=model_view(inputs[row], config), heatmap=maps.maps[row].numpy(),
                                     image_title=f"true: {true}", map_title=f"predicted: {guess} ({probability:.0%})",
                                     note=f"{Path(path).parent.name}/{Path(path).name}"))
            self._computed = (maps.method, pairs)
        return self._computed

    def key(self) -> dict:
        """What the maps and the figure of them are drawn from (graft.report.cache): the model's
        weights, its input, and each mistake's file (path, size, times) and answer."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        files = []
        for path, index, true, guess, probability in self.mistakes:
            stat = os.stat(path)
            files.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns,
                          index, true, guess, repr(probability)])
        return {"model": digest.hexdigest(), "data_config": repr(self.model.backbone.data_config), "mistakes": files}


def confident_mistakes(
    model: GraftModel,
    samples: Sequence[Sample],
    logits: np.ndarray,
    *,
    classes: Sequence[str],
    limit: int = MISTAKES_SHOWN,
) -> list[Mistake]:
    """The `limit` wrong predictions with the highest probability, most confident first, each with the
    activation map of the class predicted (what the model saw that was not there). The maps are
    computed when first asked for (`Mistake.pair`, `Mistake.method`), all in one batch, from
    `model` as it is then."""
    probabilities = torch.from_numpy(np.asarray(logits, dtype=np.float32)).softmax(dim=1).numpy()
    predicted = probabilities.argmax(axis=1)
    labels = np.array([s.label for s in samples])
    wrong = np.flatnonzero(predicted != labels)
    chosen = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:limit]
    if len(chosen) == 0:
        return []
    found = [(str(Path(samples[index].path)), int(predicted[index]), classes[labels[index]],
              classes[predicted[index]], float(probabilities[index, predicted[index]])) for index in chosen]
    maps = _Maps(model, found)
    return [Mistake(path, true, guess, probability, maps, row) for row, (path, _, true, guess, probability)
            in enumerate(found)]


def mistakes_key(mistakes: Sequence[Mistake]) -> dict | None:
    """What the figure of `mistakes` is drawn from (graft.report.cache), or None where they do not
    come from one call of `confident_mistakes` or a file cannot be read (the figure is then drawn)."""
    if not mistakes or any(mistake.maps is not mistakes[0].maps for mistake in mistakes):
        return None
    try:
        return {**mistakes[0].maps.key(), "rows": [mistake.row for mistake in mistakes]}
    except OSError:
        return None


def confident_label_mistakes(
    model: GraftModel,
    samples: Sequence[Sample],
    logits: np.ndarray,
    *,
    targets: np.ndarray,
    thresholds: Sequence[float],
    classes: Sequence[str],
    limit: int = MISTAKES_SHOWN,
) -> list[Mistake]:
    """Several labels per image: the worst wrong decisions, each with the map of the class concerned.
    False positives (a class given that the image does not have), most probable first, and false
    negatives (a label of the image not given), least probable first, half of `limit` each where
    both are that many. `true` lists the image's labels; `predicted` is the class given ("not CLASS"
    for a label missed) and `probability` the model's probability for that answer."""
    from ..evaluation.thresholds import sigmoid

    probabilities = sigmoid(logits)
    given = probabilities >= np.asarray(thresholds, dtype=np.float64)
    truth = np.asarray(targets).astype(bool)
    false_positive = sorted(zip(*np.nonzero(given & ~truth), strict=True), key=lambda p: -probabilities[p])
    false_negative = sorted(zip(*np.nonzero(~given & truth), strict=True), key=lambda p: probabilities[p])
    half = limit // 2
    take_fp = min(len(false_positive), max(half, limit - len(false_negative)))
    chosen = [(p, True) for p in false_positive[:take_fp]] + [(p, False) for p in false_negative[: limit - take_fp]]
    found = []
    for (row, column), positive in chosen:
        labels = ", ".join(classes[int(c)] for c in np.flatnonzero(truth[row])) or "no label"
        probability = float(probabilities[row, column])
        found.append((str(Path(samples[row].path)), int(column), labels,
                      classes[column] if positive else f"not {classes[column]}",
                      probability if positive else 1.0 - probability))
    if not found:
        return []
    maps = _Maps(model, found)
    return [Mistake(path, true, guess, probability, maps, row) for row, (path, _, true, guess, probability)
            in enumerate(found)]
