"""The untouched ImageNet classifier: predictions decoded to class names (Keras' decode_predictions)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from timm.data import ImageNetInfo

from ..errors import GraftError
from .backbone import _data_config, build_timm_model
from .registry import DEFAULT_BACKBONE
from .weights import load_pretrained


def predict_imagenet(
    images: Sequence[str | Path],
    *,
    backbone: str = DEFAULT_BACKBONE,
    weights: str = "imagenet",
    top_k: int = 5,
) -> list[list[tuple[str, float]]]:
    """Top-k ImageNet class names and probabilities for each image, with the backbone's own head."""
    from ..data.images import load_image
    from ..data.transforms import eval_transform

    model = build_timm_model(backbone)
    load_pretrained(model, backbone, weights)
    if model.num_classes != 1000:
        raise GraftError(f"{backbone} has {model.num_classes} outputs, not the 1000 ImageNet classes.")
    model.eval()
    transform = eval_transform(_data_config(model, None))
    info = ImageNetInfo()
    batch = torch.stack([transform(load_image(path)) for path in images])
    with torch.inference_mode():
        probabilities = model(batch).softmax(dim=-1)
    k = max(1, min(top_k, probabilities.shape[-1]))
    top = probabilities.topk(k, dim=-1)
    return [
        [(info.index_to_description(int(i)), float(p)) for p, i in zip(values, indices)]
        for values, indices in zip(top.values, top.indices)
    ]
