"""What each stage of the backbone responds to in one image: its strongest channels' activation maps.

A CNN's stages are where resolution drops (timm's `feature_info`, the same stages `graft summary`
counts and `truncate --cut K` cuts at). Early stages keep a fine grid of few channels that respond to
edges and colours; late ones a coarse grid of many channels that respond to object parts. Showing
the maps side by side, stage by stage, is the "visualising CNNs" picture of the course notes, and
the reason early stages suit data unlike ImageNet.

Stage outputs are read with forward hooks during one pass of the backbone, which stops after the
deepest stage asked for: it works on any timm model with `feature_info`, cut or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from ..backbones import Backbone
from ..classifier import Classifier
from ..errors import GraftError
from ..plotting import write_png
from .cam import feature_grid
from .overlay import model_inputs, model_view

CHANNELS_SHOWN = 8  # maps per stage in the figure: one row of a readable size


@dataclass(frozen=True)
class Stage:
    """One stage of a backbone: where it ends (a module of the timm model), its channels and stride."""

    index: int
    module: str
    channels: int
    reduction: int  # input pixels per position of its map (the stride), e.g. 8

    def describe(self) -> str:
        return f"stage {self.index} ({self.module}, {self.channels} channels, stride {self.reduction})"


def backbone_stages(backbone: Backbone) -> list[Stage]:
    """The stages `backbone` keeps (all of them, or 0..cut for a cut backbone)."""
    info = getattr(backbone.body, "feature_info", None)
    if info is not None and hasattr(info, "info"):  # a cut backbone: timm's FeatureInfo of the whole model
        info = info.info
    entries = list(info or [])[: backbone.num_stages]
    if not entries:
        raise GraftError(f"Backbone {backbone.name!r} does not expose its stages (timm's feature_info), so graft "
                         "cannot show what they respond to; use a CNN such as tf_efficientnet_lite0 or resnet50.")
    return [Stage(index=i, module=e["module"], channels=int(e["num_chs"]), reduction=int(e["reduction"]))
            for i, e in enumerate(entries)]


def pick_stage(stages: Sequence[Stage], index: int, *, backbone: str) -> Stage:
    """Stage `index` (negative counts from the end, as in Python), or a GraftError naming the range."""
    if not -len(stages) <= index < len(stages):
        raise GraftError(f"--stage {index}: {backbone} has stages 0 to {len(stages) - 1} "
                         f"(or -1 to -{len(stages)} from the end); pick one of those.")
    return stages[index % len(stages)]


def stage_module(backbone: Backbone, stage: Stage) -> nn.Module:
    """The module whose output is `stage`'s map, in the backbone's body."""
    parts = stage.module.split(".")
    names = [stage.module]
    if backbone.cut is not None and len(parts) >= 2:
        # timm's FeatureListNet (a cut backbone) flattens the first two levels: blocks.1 -> blocks_1
        names.insert(0, ".".join(["_".join(parts[:2]), *parts[2:]]))
    for name in names:
        try:
            return backbone.body.get_submodule(name)
        except AttributeError:
            continue
    raise GraftError(f"Backbone {backbone.name!r} has no module {stage.module!r} for stage {stage.index}, so graft "
                     "cannot read that stage; use a CNN such as tf_efficientnet_lite0 or resnet50.")


class _Enough(Exception):
    """Raised by the hook of the deepest stage wanted: the rest of the network need not run."""


def stage_outputs(backbone: Backbone, images: torch.Tensor, stages: Sequence[Stage], *,
                  grad: bool = False) -> dict[int, torch.Tensor]:
    """The maps (B x C x h x w, float32) of `stages` for `images` (B x 3 x H x W, normalised), by index.

    One pass in eval mode (the mode is restored after), stopped after the deepest stage. With `grad`
    the maps keep their graph to `images`, for the receptive field (`receptive_field`).
    """
    outputs: dict[int, torch.Tensor] = {}
    deepest = max(stage.index for stage in stages)

    def keep(stage: Stage):
        def hook(module, inputs, output):
            outputs[stage.index] = as_maps(backbone, stage, output if grad else _detach(output))
            if stage.index == deepest:
                raise _Enough
        return hook

    handles = [stage_module(backbone, stage).register_forward_hook(keep(stage)) for stage in stages]
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.set_grad_enabled(grad):
            backbone.forward_features(images)
    except _Enough:
        pass
    finally:
        for handle in handles:
            handle.remove()
        backbone.train(was_training)
    return outputs


def _detach(output):
    return [o.detach() for o in output] if isinstance(output, (list, tuple)) else output.detach()


def as_maps(backbone: Backbone, stage: Stage, output) -> torch.Tensor:
    """A stage's output as B x C x h x w, whatever layout the model gives (NCHW, NHWC or tokens)."""
    output = output[-1] if isinstance(output, (list, tuple)) else output
    maps = output.float()
    if maps.ndim == 4 and maps.shape[1] != stage.channels and maps.shape[-1] == stage.channels:
        maps = maps.permute(0, 3, 1, 2)  # Swin-like stages are channels-last
    if maps.ndim == 3:
        maps = feature_grid(backbone, maps)  # tokens back on their grid, prefix tokens dropped
    if maps.ndim != 4:
        raise GraftError(f"Stage {stage.index} of {backbone.name!r} gives an output of shape {tuple(maps.shape)}, which "
                         "is not a map of image positions, so graft cannot draw it.")
    return maps


@dataclass
class StageMaps:
    """The strongest channels of one stage for one image."""

    stage: Stage
    size: tuple[int, int]  # h x w of the stage's map
    channels: list[int]  # strongest first: highest mean activation over the image
    means: list[float]  # those means
    maps: np.ndarray  # len(channels) x h x w

    def to_dict(self) -> dict:
        return {"stage": self.stage.index, "module": self.stage.module, "size": list(self.size),
                "channels": self.channels, "means": self.means}


@dataclass
class FeatureMaps:
    path: str  # the image
    png: Path
    stages: list[StageMaps]

    def to_dict(self) -> dict:
        return {"path": self.path, "png": str(self.png), "stages": [s.to_dict() for s in self.stages]}


def strongest_maps(backbone: Backbone, image: torch.Tensor, *, count: int = CHANNELS_SHOWN) -> list[StageMaps]:
    """For each stage, the `count` channels with the highest mean activation on `image` (3 x H x W)."""
    stages = backbone_stages(backbone)
    outputs = stage_outputs(backbone, image[None], stages)
    result = []
    for stage in stages:
        maps = outputs[stage.index][0].cpu()
        means = maps.mean(dim=(1, 2)).numpy()
        order = np.argsort(-means, kind="stable")[:count]  # stable: ties keep channel order
        result.append(StageMaps(stage=stage, size=(maps.shape[1], maps.shape[2]), channels=[int(c) for c in order],
                                means=[float(means[c]) for c in order], maps=maps[torch.as_tensor(order)].numpy()))
    return result


def feature_maps(classifier: Classifier, images: Sequence[str | Path], *, out_dir: str | Path,
                 count: int = CHANNELS_SHOWN, overwrite: bool = True) -> list[FeatureMaps]:
    """Write `out_dir/<image>-feature-maps.png` for each image: every stage's strongest channels.
    `overwrite=False` refuses (a GraftError naming it) a PNG that exists already, before any is written."""
    from ..io import refuse_overwrite

    config = classifier.data_config
    out_dir = Path(out_dir)
    pngs = [out_dir / f"{Path(path).stem}-feature-maps.png" for path in images]
    refuse_overwrite(pngs, flag="--out", overwrite=overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for path, png in zip(images, pngs):
        batch = model_inputs([path], config)
        stages = strongest_maps(classifier.model.backbone, batch[0], count=count)
        figure = feature_maps_figure(model_view(batch[0], config), stages, backbone=classifier.model.backbone.name,
                                     note=Path(path).name)
        write_png(figure, png)
        results.append(FeatureMaps(path=str(path), png=png, stages=stages))
    return results


def feature_maps_figure(view: Image.Image, stages: Sequence[StageMaps], *, backbone: str, note: str = "",
                        panel_inches: float = 1.45) -> Figure:
    """The image on the left; on the right one panel per stage (a subfigure), a row of its strongest maps.

    Maps are drawn at their own resolution (no smoothing), so the grid shrinking stage by stage shows;
    each map is scaled from its own minimum to its own maximum, so weak and strong channels are both readable.
    """
    columns = max(len(s.channels) for s in stages)
    row_inches = panel_inches + 0.75
    height = len(stages) * row_inches + 0.9
    figure = Figure(figsize=(columns * panel_inches + 3.6, height), layout="constrained")
    left, right = figure.subfigures(1, 2, width_ratios=[3.2, columns * panel_inches], wspace=0.02, squeeze=False)[0]
    ax = left.subplots()
    ax.imshow(view)
    ax.set(xticks=[], yticks=[])
    ax.set_title(f"Input as the model saw it\n({view.width} x {view.height} px)", fontsize=10)
    if note:
        ax.set_xlabel(note, fontsize=9, color="0.3")
    panels = right.subfigures(len(stages), 1, squeeze=False)[:, 0]
    for panel, stage in zip(panels, stages):
        height_px, width_px = stage.size
        panel.suptitle(f"Stage {stage.stage.index}: {stage.stage.module}, {stage.stage.channels} channels, "
                       f"map {height_px} x {width_px} (stride {stage.stage.reduction})",
                       fontsize=10, fontweight="bold", x=0.01, ha="left")
        axes = panel.subplots(1, columns, squeeze=False)[0]
        for index, ax in enumerate(axes):
            ax.set(xticks=[], yticks=[])
            if index >= len(stage.channels):
                ax.set_axis_off()
                continue
            values = stage.maps[index]
            low, high = float(values.min()), float(values.max())
            ax.imshow(values, cmap="viridis", interpolation="nearest", vmin=low, vmax=max(high, low + 1e-6))
            ax.set_title(f"channel {stage.channels[index]}", fontsize=9)
    figure.suptitle(f"{backbone}: the {columns} strongest channels of each stage (highest mean activation; "
                    "each map scaled to its own range, bright = strong)", fontsize=11)
    return figure
