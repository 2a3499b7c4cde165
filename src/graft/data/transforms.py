"""Image -> tensor, exactly as the backbone was trained to see images, plus optional augmentation.

Everything comes from the backbone's pretrained config (size, mean/std, interpolation, crop), so a
ResNet gets ImageNet statistics and EfficientNet-Lite gets mean 0.5/std 0.5 without the user knowing.
Small images (CIFAR's 32 px) are resized up to the backbone's input size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from timm.data import create_transform
from torchvision import transforms as T

from ..backbones.backbone import DataConfig


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


def _backbone_preprocessing(config: DataConfig) -> dict:
    """The timm arguments every transform shares: size, interpolation and normalisation."""
    return dict(input_size=config.input_size, interpolation=config.interpolation, mean=config.mean, std=config.std)


class EvalTransform:
    """Resize, centre-crop, normalise, as the backbone's config says; small images are not cropped.

    The centre crop (crop_pct 0.875) is ImageNet's convention for photos larger than the input.
    An image smaller than the input (CIFAR's 32 px) has no margin to spare: it is resized whole
    to the input size instead of losing an eighth of its border.
    """

    def __init__(self, config: DataConfig):
        size = config.input_size[1:]
        self.size = min(size)
        self.photo = create_transform(
            **_backbone_preprocessing(config), is_training=False, crop_pct=config.crop_pct, crop_mode=config.crop_mode
        )
        self.small = T.Compose([
            T.Resize(size, interpolation=T.InterpolationMode(config.interpolation), antialias=True),
            T.ToTensor(),
            T.Normalize(config.mean, config.std),
        ])

    def __call__(self, image):
        return self.small(image) if min(image.size) < self.size else self.photo(image)

    def __repr__(self) -> str:
        return f"EvalTransform(small images: {self.small}, photos: {self.photo})"


def eval_transform(config: DataConfig) -> EvalTransform:
    """What evaluation, prediction and linear probes see."""
    return EvalTransform(config)


def train_transform(config: DataConfig, augment: Augment | None):
    """The eval transform when `augment` is None, else a random resized crop + flip (+ colour jitter)."""
    if augment is None:
        return eval_transform(config)
    return create_transform(
        **_backbone_preprocessing(config),
        is_training=True,
        scale=augment.scale,
        hflip=augment.hflip,
        color_jitter=augment.color_jitter or None,
        auto_augment=None,
        re_prob=0.0,
    )
