"""The most confident mistakes: wrong answers given with the highest probability, with their maps.

They are where a model is most misleading, and often where the data is wrong: a mislabelled image
is "mistaken" with high confidence for its true class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.discover import Sample
from ..explain import MapPair, activation_maps, model_inputs, model_view
from ..model import GraftModel

MISTAKES_SHOWN = 8


@dataclass
class Mistake:
    path: str
    true: str
    predicted: str
    probability: float  # of the predicted class
    method: str  # how the map was made: CAM or Grad-CAM
    pair: MapPair  # the image as the model saw it and the map of the predicted class

    def to_dict(self) -> dict:
        return {"path": self.path, "true": self.true, "predicted": self.predicted, "probability": self.probability,
                "method": self.method}


def confident_mistakes(
    model: GraftModel,
    samples: Sequence[Sample],
    logits: np.ndarray,
    *,
    classes: Sequence[str],
    limit: int = MISTAKES_SHOWN,
) -> list[Mistake]:
    """The `limit` wrong predictions with the highest probability, most confident first, each with the
    activation map of the class predicted (what the model saw that was not there)."""
    probabilities = torch.from_numpy(np.asarray(logits, dtype=np.float32)).softmax(dim=1).numpy()
    predicted = probabilities.argmax(axis=1)
    labels = np.array([s.label for s in samples])
    wrong = np.flatnonzero(predicted != labels)
    chosen = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:limit]
    if len(chosen) == 0:
        return []
    config = model.backbone.data_config
    inputs = model_inputs([samples[i].path for i in chosen], config)
    maps = activation_maps(model, inputs, classes=torch.from_numpy(predicted[chosen]))
    mistakes = []
    for row, index in enumerate(chosen):
        true, guess = classes[labels[index]], classes[predicted[index]]
        probability = float(probabilities[index, predicted[index]])
        path = Path(samples[index].path)
        pair = MapPair(view=model_view(inputs[row], config), heatmap=maps.maps[row].numpy(),
                       image_title=f"true: {true}", map_title=f"predicted: {guess} ({probability:.0%})",
                       note=f"{path.parent.name}/{path.name}")
        mistakes.append(Mistake(str(path), true, guess, probability, maps.method, pair))
    return mistakes
