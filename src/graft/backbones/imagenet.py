"""The untouched ImageNet classifier: predictions decoded to class names (Keras' decode_predictions).

`ImageNetModel` is a graft.predictor.BatchPredictor like every other model graft opens: images are
read, prepared (graft.data.prepare), batched and read ahead there, so `graft predict --imagenet`
streams any number of images in bounded memory, decodes each once, and honours --batch-size,
--tta and --engine. The network runs in the engine graft.engines.choice picks (graft.engines.forward:
on a CPU, its ONNX graph, traced once per backbone and size and kept in the engines' cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.config import DataConfig
from ..errors import BadImageError, GraftError
from ..predictor import BatchPredictor, model_metadata
from ..runtime import Runtime
from .backbone import _data_config, build_timm_model
from .registry import DEFAULT_BACKBONE
from .weights import load_pretrained


class _FromPixels(nn.Module):
    """uint8 pixels in (N x 3 x H x W), the timm model's ImageNet logits out: it normalises the batch
    as graft's backbones do (DataConfig.normalize)."""

    def __init__(self, model: nn.Module, config: DataConfig):
        super().__init__()
        self.model, self.config = model, config

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(self.config.normalize(pixels))


class ImageNetModel(BatchPredictor):
    """`backbone`'s own 1000-class ImageNet head, with `weights` (imagenet, or a weights file);
    `engine`: auto, torch, onnxruntime or openvino."""

    def __init__(self, backbone: str = DEFAULT_BACKBONE, *, weights: str = "imagenet", engine: str = "auto"):
        from timm.data import ImageNetInfo

        from ..engines.forward import forward_in_engine

        model = build_timm_model(backbone)
        load_pretrained(model, backbone, weights)
        if model.num_classes != 1000:
            raise GraftError(f"{backbone} has {model.num_classes} outputs, not the 1000 ImageNet classes.")
        self.backbone = backbone
        self._config = _data_config(model, None)
        info = ImageNetInfo()
        self.classes = [info.index_to_description(index) for index in range(1000)]
        # On a CPU its graph is traced once per backbone and size, then read from the engines' cache.
        self._forward = forward_in_engine(_FromPixels(model, self._config).eval(), runtime=Runtime(engine=engine),
                                          input_size=self._config.input_size)
        self.engine, self.precision = self._forward.engine, self._forward.precision

    @property
    def data_config(self) -> DataConfig:
        return self._config

    @property
    def metadata(self) -> dict[str, Any]:
        return {**model_metadata(self.classes, self._config, None, format="timm-imagenet"), "backbone": self.backbone}

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        return self._forward(torch.from_numpy(np.ascontiguousarray(pixels))).softmax(dim=-1).numpy()


def predict_imagenet(
    images: Sequence[str | Path],
    *,
    backbone: str = DEFAULT_BACKBONE,
    weights: str = "imagenet",
    top_k: int = 5,
    batch_size: int = 64,
    engine: str = "auto",
) -> list[list[tuple[str, float]]]:
    """Top-k ImageNet class names and probabilities for each image, with the backbone's own head
    (ImageNetModel.predict; an image that cannot be read raises BadImageError)."""
    answers = ImageNetModel(backbone, weights=weights, engine=engine).predict(list(images), top_k=top_k,
                                                                             batch_size=batch_size)
    for answer in answers:
        if answer.error is not None:
            raise BadImageError(answer.path, answer.error)
    return [answer.top for answer in answers]
