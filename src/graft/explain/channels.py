"""What a stage's channels respond to: the training images that activate them most (Zeiler and Fergus).

A channel's activation on an image is its map's mean over the image: what global average pooling
hands the head, and what the feature cache holds. The stage's strongest channels are those whose
top images activate them most (the mean of the top `per_channel` activations); for each, its top
images are shown, cropped to the stage's receptive field around the channel's peak where that field
is smaller than the image. Early stages answer to colours and edges anywhere; late ones to object
parts, and only in images of some classes.

The activations are features like any others: a stage's pooled map is what a backbone cut at that
stage (`truncate --cut K`) gives, so they are read from (and written to) the feature cache under the
same key. A run whose pooled features are its last stage's mean (a ResNet's, a truncate run's)
finds them already there from training.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from ..backbones import Backbone
from ..classifier import Classifier
from ..data.discover import Sample
from ..errors import GraftError
from ..features import FeatureCache, FeatureSet, backbone_features
from ..plotting import write_png
from ..runtime import Runtime
from .feature_maps import Stage, backbone_stages, pick_stage, stage_outputs
from .overlay import model_inputs, model_view

CHANNELS = 6  # channels per figure
PER_CHANNEL = 6  # top images per channel


@dataclass
class TopImage:
    path: str
    label: str
    activation: float  # the channel's mean over the image
    box: tuple[int, int, int, int]  # the crop (left, top, right, bottom) in the model's input pixels


@dataclass
class ChannelImages:
    channel: int
    strength: float  # mean activation of its top images: what ranks the channels
    images: list[TopImage]


@dataclass
class StageChannels:
    """A stage's strongest channels and their top training images."""

    stage: Stage
    channels: list[ChannelImages]
    images: int  # how many training images were ranked
    receptive_field: int  # px of the model's input one position of the stage's map sees
    input_size: int
    cached: bool  # the activations were in the feature cache already
    png: Path | None = None
    crops: list[list[Image.Image]] = field(default_factory=list, repr=False)  # per channel, per top image

    def to_dict(self) -> dict:
        return {
            "stage": self.stage.index, "module": self.stage.module, "stage_channels": self.stage.channels,
            "images": self.images, "receptive_field": self.receptive_field, "input_size": self.input_size,
            "cached": self.cached, "png": None if self.png is None else str(self.png),
            "channels": [{"channel": c.channel, "strength": c.strength,
                          "images": [{"path": i.path, "label": i.label, "activation": i.activation, "box": list(i.box)}
                                     for i in c.images]} for c in self.channels],
        }


class _StageBody(nn.Module):
    """The backbone up to one stage, as the body of a cut Backbone: `[map]` out, as timm's FeatureListNet."""

    def __init__(self, backbone: Backbone, stage: Stage):
        super().__init__()
        self.inner = backbone
        self.stage = stage

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [stage_outputs(self.inner, x, [self.stage])[self.stage.index]]


def stage_backbone(backbone: Backbone, stage: Stage, *, weights_id: str) -> Backbone:
    """`backbone` cut at `stage` (sharing its modules) for `backbone_features`: pooled maps, cached under
    the key a backbone cut there with the same weights has. The run's own backbone when its pooled
    features are that stage's mean, so the features training cached are found."""
    if stage.index == backbone.num_stages - 1 and _pools_last_stage(backbone, stage):
        view = Backbone(backbone.body, name=backbone.name, num_features=backbone.num_features, stages=[],
                        data_config=backbone.data_config, cut=backbone.cut, weights_source=backbone.weights_source,
                        weights_id=weights_id)
    else:
        view = Backbone(_StageBody(backbone, stage), name=backbone.name, num_features=stage.channels, stages=[],
                        data_config=backbone.data_config, cut=stage.index, weights_source=backbone.weights_source,
                        weights_id=weights_id)
    view.stage_params = backbone.stage_params[: stage.index + 1]
    return view


def _pools_last_stage(backbone: Backbone, stage: Stage) -> bool:
    """Whether the backbone's pooled features are the spatial mean of `stage`'s map (checked on noise)."""
    size = backbone.data_config.input_size
    image = torch.randn(1, *size, generator=torch.Generator().manual_seed(0))
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            pooled = backbone(image).float()
            maps = stage_outputs(backbone, image, [stage])[stage.index]
    finally:
        backbone.train(was_training)
    average = maps.mean(dim=(2, 3))
    return pooled.shape == average.shape and bool(torch.allclose(pooled, average, rtol=1e-3, atol=1e-5))


def receptive_field(backbone: Backbone, stage: Stage) -> int:
    """Pixels of the input (one side) that the centre position of `stage`'s map depends on.

    Measured, not derived from the layers: the gradient of that position with respect to a noise
    image is non-zero exactly on its receptive field, whatever the architecture (padding, dilation,
    depthwise convolutions). Only the input gets a gradient: parameters are left untouched.
    """
    size = backbone.data_config.input_size
    image = torch.randn(1, *size, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    maps = stage_outputs(backbone, image, [stage], grad=True)[stage.index]
    height, width = maps.shape[2:]
    (gradient,) = torch.autograd.grad(maps[0, :, height // 2, width // 2].sum(), image)
    touched = gradient.abs().sum(dim=(0, 1)) > 0
    rows, columns = touched.any(dim=1).nonzero(), touched.any(dim=0).nonzero()
    if len(rows) == 0:
        return min(size[1:])
    return int(max(rows.max() - rows.min() + 1, columns.max() - columns.min() + 1))


def rank_channels(activations: np.ndarray, *, channels: int = CHANNELS, per_channel: int = PER_CHANNEL
                  ) -> list[tuple[int, float, list[int]]]:
    """(channel, strength, top image rows) for the `channels` strongest channels of `activations`
    (images x channels). Stable sorts: ties go to the lower index, so the ranking is reproducible."""
    values = np.asarray(activations, dtype=np.float32)
    top = np.argsort(-values, axis=0, kind="stable")[:per_channel]  # per_channel x C: rows, best first
    strength = np.take_along_axis(values, top, axis=0).mean(axis=0)
    order = np.argsort(-strength, kind="stable")[:channels]
    return [(int(c), float(strength[c]), [int(r) for r in top[:, c]]) for c in order]


def channel_activations(backbone: Backbone, samples: Sequence[Sample], stage: Stage, *, weights_id: str,
                        runtime: Runtime, cache: FeatureCache | None = None) -> tuple[FeatureSet, bool]:
    """Each sample's mean activation of each channel of `stage` (N x C), and whether the cache had them."""
    view = stage_backbone(backbone, stage, weights_id=weights_id)
    if isinstance(view.body, _StageBody):  # a hook on an inner stage, which the ONNX tracer cannot follow
        runtime = runtime.but(engine="torch")
    started = time.time()
    features = backbone_features(view, samples, split="train", runtime=runtime, cache=cache or FeatureCache())
    return features, float(features.meta.get("created", started)) < started


def top_channels(
    backbone: Backbone,
    samples: Sequence[Sample],
    classes: Sequence[str],
    *,
    stage: int = -1,
    weights_id: str,
    runtime: Runtime,
    cache: FeatureCache | None = None,
    channels: int = CHANNELS,
    per_channel: int = PER_CHANNEL,
) -> StageChannels:
    """The strongest channels of stage `stage` over `samples`, with their top images cropped.

    `weights_id` identifies the backbone's weights for the cache: pass the weights it was built with
    only when they were not trained since (else a new id, e.g. the run file's fingerprint).
    """
    if not samples:
        raise GraftError("No training images to rank the channels on.")
    chosen = pick_stage(backbone_stages(backbone), stage, backbone=backbone.name)
    features, cached = channel_activations(backbone, samples, chosen, weights_id=weights_id, runtime=runtime,
                                           cache=cache)
    ranking = rank_channels(np.asarray(features.features), channels=channels, per_channel=min(per_channel, len(samples)))
    config = backbone.data_config
    field_px = receptive_field(backbone, chosen)
    rows = sorted({row for _, _, top in ranking for row in top})
    inputs = model_inputs([samples[row].path for row in rows], config)
    maps = stage_outputs(backbone, inputs, [chosen])[chosen.index].cpu()
    position = {row: index for index, row in enumerate(rows)}
    result = StageChannels(stage=chosen, channels=[], images=len(samples), receptive_field=field_px,
                           input_size=config.image_size, cached=cached)
    views = {row: model_view(inputs[position[row]], config) for row in rows}
    for channel, strength, top in ranking:
        images, crops = [], []
        for row in top:
            box = _crop_box(maps[position[row], channel], views[row].size, field_px)
            images.append(TopImage(path=str(samples[row].path), label=classes[samples[row].label],
                                   activation=float(features.features[row, channel]), box=box))
            crops.append(_crop(views[row], box))
        result.channels.append(ChannelImages(channel=channel, strength=strength, images=images))
        result.crops.append(crops)
    return result


def _crop_box(channel_map: torch.Tensor, size: tuple[int, int], field_px: int) -> tuple[int, int, int, int]:
    """The receptive field around the map's peak, moved inside the image; the whole image when it does not fit."""
    width, height = size
    if field_px >= min(width, height):
        return 0, 0, width, height
    rows, columns = channel_map.shape
    peak = int(torch.argmax(channel_map))
    y, x = (peak // columns + 0.5) * height / rows, (peak % columns + 0.5) * width / columns
    left = int(round(min(max(x - field_px / 2, 0), width - field_px)))
    top = int(round(min(max(y - field_px / 2, 0), height - field_px)))
    return left, top, left + field_px, top + field_px


def _crop(view: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    if box == (0, 0, *view.size):
        return view
    return view.crop(box)


def run_top_channels(classifier: Classifier, *, stage: int = -1, images: int | None = None, seed: int = 0,
                     out_dir: str | Path | None = None, progress: bool = True, channels: int = CHANNELS,
                     per_channel: int = PER_CHANNEL, overwrite: bool = True) -> StageChannels:
    """`top_channels` for a run: its training images (all, or a stratified sample of `images`), its
    cache and precision, and the PNG `out_dir/channels-stage-K.png` (RUN/explain/ by default;
    `overwrite=False` refuses one that exists already, before any work, with a GraftError naming it)."""
    from ..advise.measure import stratified_sample
    from ..data.discover import find_data
    from ..io import refuse_overwrite

    record = classifier.record
    if record is None or record.data is None or not record.data.source:
        raise GraftError("--channels needs a run folder trained by graft: its graft.json names the training images.")
    source = Path(record.data.source)
    if not source.exists():
        raise GraftError(f"The run's training data {source} is not there any more, so graft cannot rank images by "
                         "channel; put the data back at that path.")
    config = record.config
    splits = find_data(source, val_split=config.data.val_split, seed=config.data.seed, check_images=False,
                       task=config.data.task)
    samples = splits.train
    if images is not None:
        if images < 1:
            raise GraftError(f"--images {images}: use 1 or more.")
        per_class = max(1, -(-images // max(1, len(splits.classes))))
        samples = stratified_sample(samples, per_class, seed=seed)[:images]
    backbone = classifier.model.backbone
    if out_dir is not None:  # before any work: the figure's name is known from the stage
        chosen = pick_stage(backbone_stages(backbone), stage, backbone=backbone.name)
        refuse_overwrite([Path(out_dir) / f"channels-stage-{chosen.index}.png"], flag="--out", overwrite=overwrite)
    weights_id = classifier.backbone_weights_id()
    cache = FeatureCache()  # graft's cache, or the command's --cache-dir (graft.runtime.use_cache_dir)
    runtime = config.runtime.resolve(progress=progress)
    result = top_channels(backbone, samples, splits.classes, stage=stage, weights_id=weights_id, runtime=runtime,
                          cache=cache, channels=channels, per_channel=per_channel)
    if out_dir is not None:
        result.png = write_png(channels_figure(result, backbone=backbone.name),
                               Path(out_dir) / f"channels-stage-{result.stage.index}.png")
    return result


def channels_figure(result: StageChannels, *, backbone: str, panel_inches: float = 1.35) -> Figure:
    """One row per channel (strongest first): its top training images, cropped to the receptive field."""
    rows, columns = len(result.channels), max((len(c.images) for c in result.channels), default=1)
    figure = Figure(figsize=(columns * panel_inches + 1.5, rows * (panel_inches + 0.35) + 1.1), layout="constrained")
    axes = figure.subplots(max(rows, 1), columns, squeeze=False)
    for row, (channel, crops) in enumerate(zip(result.channels, result.crops)):
        for column, ax in enumerate(axes[row]):
            ax.set(xticks=[], yticks=[])
            if column >= len(crops):
                ax.set_axis_off()
                continue
            ax.imshow(crops[column])
            top = channel.images[column]
            ax.set_title(f"{_short(top.label)} {top.activation:.2f}", fontsize=8)
            if column == 0:
                ax.set_ylabel(f"channel {channel.channel}", fontsize=9, fontweight="bold")
    stage = result.stage
    if result.receptive_field < result.input_size:
        crop = f"crops: the {result.receptive_field} px receptive field around the channel's peak"
    else:
        crop = f"whole images: the receptive field ({result.receptive_field} px) covers the {result.input_size} px input"
    figure.suptitle(f"{backbone} stage {stage.index} ({stage.module}, {stage.channels} channels, stride {stage.reduction}):\n"
                    f"the training images that activate its {rows} strongest channels most",
                    fontsize=10, fontweight="bold")
    figure.supxlabel(f"Out of {result.images} training images; above each: class and the channel's mean activation; "
                     f"{crop}.", fontsize=8, color="0.3")
    return figure


def _short(text: str, width: int = 14) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
