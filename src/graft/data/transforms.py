"""Image -> tensor, exactly as the backbone was trained to see images, plus optional augmentation.

Everything comes from the backbone's pretrained config (size, mean/std, interpolation, crop), so a
ResNet gets ImageNet statistics and EfficientNet-Lite gets mean 0.5/std 0.5 without the user knowing.
Small images (CIFAR's 32 px) are resized up to the backbone's input size. The eval transform is
graft.data.prepare's `prepare_image`, the one preparation of every prediction; the augmented
training transform is torchvision's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torchvision.transforms import v2

from .config import DataConfig
from .prepare import VERSION as PREPARE_VERSION
from .prepare import prepare_image


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation: a random resized crop and a horizontal flip by default."""

    scale: tuple[float, float] = (0.35, 1.0)
    hflip: float = 0.5
    color_jitter: float = 0.0

    def __post_init__(self):
        from ..errors import GraftError

        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise GraftError(f"--crop-scale {self.scale[0]}: the crop keeps a fraction of the image; use a value in (0, 1].")
        if not 0.0 <= self.hflip <= 1.0:
            raise GraftError(f"--hflip {self.hflip}: a probability, from 0 to 1.")
        if self.color_jitter < 0.0:
            raise GraftError(f"--color-jitter {self.color_jitter}: use 0 (none) or a positive strength such as 0.2.")

    def to_dict(self) -> dict:
        return asdict(self)


def _interpolation(config: DataConfig) -> v2.InterpolationMode:
    return v2.InterpolationMode(config.interpolation)


def _finish(config: DataConfig, pixels: bool) -> list:
    """The last steps: stop at uint8 pixels, or scale to [0, 1] and normalise as the backbone expects."""
    if pixels:
        return []
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(config.mean), list(config.std))]


class EvalTransform:
    """What evaluation, prediction and linear probes see: `prepare_image` (graft.data.prepare: resize,
    centre crop, small images resized whole, as the backbone's config says) as a tensor, then
    scaled and normalised unless `pixels`.

    It is the one preparation every way of predicting uses (graft.data.prepare says why, and what
    Pillow's resizing costs against torchvision's kernels).
    """

    def __init__(self, config: DataConfig, *, pixels: bool = False):
        self.config = config
        self.pixels = pixels
        self.finish = v2.Compose(_finish(config, pixels)) if not pixels else None

    def __call__(self, image) -> torch.Tensor:
        tensor = torch.from_numpy(prepare_image(image, self.config))
        return self.finish(tensor) if self.finish is not None else tensor

    def __repr__(self) -> str:
        # Part of the feature cache's keys: names everything that decides the pixels.
        return (f"EvalTransform(prepare_image v{PREPARE_VERSION}, {self.config!r}, "
                f"{'uint8 pixels' if self.pixels else self.finish})")


def eval_transform(config: DataConfig, *, pixels: bool = False) -> EvalTransform:
    """What evaluation, prediction and linear probes see.

    `pixels=True` stops at a uint8 tensor of the resized, cropped image; the backbone normalises
    whole batches of those itself (`DataConfig.normalize`), which is what the fast loaders use.
    """
    return EvalTransform(config, pixels=pixels)


def train_transform(config: DataConfig, augment: Augment | None, *, pixels: bool = False):
    """The eval transform when `augment` is None, else a random resized crop + flip (+ colour jitter),
    as timm's training transform does (aspect ratios 3/4 to 4/3), on uint8 tensors like the eval one."""
    if augment is None:
        return eval_transform(config, pixels=pixels)
    jitter = augment.color_jitter
    return v2.Compose([
        v2.PILToTensor(),
        v2.RandomResizedCrop(config.input_size[1:], scale=augment.scale, ratio=(3 / 4, 4 / 3),
                             interpolation=_interpolation(config), antialias=True),
        v2.RandomHorizontalFlip(augment.hflip),
        *([v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter)] if jitter else []),
        *_finish(config, pixels),
    ])
