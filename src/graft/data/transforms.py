"""Image -> tensor, exactly as the backbone was trained to see images, plus optional augmentation.

Everything comes from the backbone's pretrained config (size, mean/std, interpolation, crop), so a
ResNet gets ImageNet statistics and EfficientNet-Lite gets mean 0.5/std 0.5 without the user knowing.
Small images (CIFAR's 32 px) are resized up to the backbone's input size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from timm.data import create_transform
from torchvision.transforms import v2

from .config import DataConfig


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
    """Resize, centre-crop, normalise, as the backbone's config says; small images are not cropped.

    The centre crop (crop_pct 0.875) is ImageNet's convention for photos larger than the input.
    An image smaller than the input (CIFAR's 32 px) has no margin to spare: it is resized whole
    to the input size instead of losing an eighth of its border.

    The picture becomes a uint8 tensor first and is resized by torchvision's uint8 kernels: within
    1/255 of Pillow's bicubic, and about 5x faster (0.24 ms against 1.40 ms for a decoded photo, in
    benchmarks/profile_steps.py),
    which on a small CPU is the difference between feeding the backbone and starving it. Crop
    modes other than timm's default centre crop go through timm's own (Pillow) pipeline.
    """

    def __init__(self, config: DataConfig, *, pixels: bool = False):
        size = config.input_size[1:]
        self.size = min(size)
        finish = _finish(config, pixels)
        if config.crop_mode == "center" and size[0] == size[1]:
            # timm's rule: resize the short side to size / crop_pct, then crop the centre.
            self.photo = v2.Compose([
                v2.PILToTensor(),
                v2.Resize(math.floor(self.size / config.crop_pct), interpolation=_interpolation(config), antialias=True),
                v2.CenterCrop(size),
                *finish,
            ])
        else:
            self.photo = create_transform(
                input_size=config.input_size, interpolation=config.interpolation, mean=config.mean, std=config.std,
                is_training=False, crop_pct=config.crop_pct, crop_mode=config.crop_mode,
                use_prefetcher=pixels,  # timm's name for "stop at uint8 pixels"
            )
        self.small = v2.Compose([
            v2.PILToTensor(),
            v2.Resize(size, interpolation=_interpolation(config), antialias=True),
            *finish,
        ])

    def __call__(self, image):
        return self.small(image) if min(image.size) < self.size else self.photo(image)

    def __repr__(self) -> str:
        return f"EvalTransform(small images: {self.small}, photos: {self.photo})"


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
