"""One image preparation for every way of running a model: a decoded RGB picture in, the model's
input out (uint8, 3 x H x W), as the backbone's pretrained config (`DataConfig`) says.

Training's eval transform and feature extraction (graft.data.transforms), `graft predict` and
`graft.load(...).predict` of a run folder or of any export, `graft evaluate`, the export's parity
check, `graft serve` and `graft predict --imagenet` all call `prepare_image`, so the same image is
the same pixels everywhere and every way of predicting gives the same answer. Only the augmented
training transform (random crops and flips) stays torchvision's.

The rules are timm's eval transform (timm.data.transforms_factory.transforms_imagenet_eval), with
the resizing done by Pillow, which is also what timm's own pipeline uses on PIL images:
- crop mode "center" (timm's default): the short side resized to floor(size / crop_pct), the long
  side in proportion (int(short * long / short_before), torchvision's rule), then the centre cropped;
- "squash": both sides resized to floor(size / crop_pct), then the centre cropped;
- "border": the long side resized to floor(size / crop_pct), then the centre cropped, or padded
  with the mean colour where the picture is smaller than the input.
An image smaller than the input on either side (CIFAR's 32 px for a 224 px network) has no margin
to spare: it is resized whole to the input size instead, in every mode, as graft always did.

It costs more than torchvision's uint8 kernels did: Pillow's bicubic took about 0.6-0.7 ms an
image where torchvision's took 0.18-0.26 ms (CIFAR's 32 px upscaled to 224, and 256 px photos),
with the same pixels or within 1/255. One preparation everywhere is worth that: with two, a
borderline image got one answer from the run folder and another from its export.

Imports neither torch nor torchvision (`graft predict model.onnx` runs without them).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from .config import DataConfig

# timm's interpolation names (timm.data.transforms.str_to_interp_mode) as Pillow's filters.
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
CROP_MODES = ("center", "squash", "border")
VERSION = 1  # part of every feature-cache key made from these pixels: bump when the pixels change


def prepare_image(image: Image.Image, config: DataConfig) -> np.ndarray:
    """`image` (decoded, 8-bit RGB, upright: graft.data.images.load_image) as the model's input:
    uint8, 3 x H x W, resized and cropped as `config` says (see the module's text)."""
    height, width = config.input_size[1:]
    resample = resample_filter(config.interpolation)
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.width < width or image.height < height:
        image = image.resize((width, height), resample)
    else:
        mode = config.crop_mode or "center"
        if mode not in CROP_MODES:
            raise ValueError(f"crop mode {mode!r}: graft knows {', '.join(CROP_MODES)} (timm's)")
        scale = (math.floor(height / config.crop_pct), math.floor(width / config.crop_pct))
        image = image.resize(_resized_size(image.size, scale, mode), resample)
        fill = tuple(round(255 * value) for value in config.mean) if mode == "border" else (0, 0, 0)
        image = _centre_crop_or_pad(image, (height, width), fill)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()


def resample_filter(interpolation: str) -> Image.Resampling:
    try:
        return RESAMPLE[interpolation]
    except KeyError:
        raise ValueError(f"interpolation {interpolation!r}: graft knows {', '.join(RESAMPLE)} (timm's)") from None


def _resized_size(size: tuple[int, int], scale: tuple[int, int], mode: str) -> tuple[int, int]:
    """(width, height) the picture of `size` (width, height) is resized to before the crop; `scale`
    is (height, width), each floor(input side / crop_pct)."""
    width, height = size
    if mode == "squash":
        return scale[1], scale[0]
    if mode == "center" and scale[0] == scale[1]:  # torchvision's Resize(int): the short side, the long in proportion
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = scale[0], int(scale[0] * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)
    # timm's ResizeKeepRatio: the ratio of the short side (center, non-square) or of the long side (border)
    ratios = (height / scale[0], width / scale[1])
    ratio = max(ratios) if mode == "border" else min(ratios)
    return round(width / ratio), round(height / ratio)


def _centre_crop_or_pad(image: Image.Image, size: tuple[int, int], fill: tuple[int, ...]) -> Image.Image:
    """The centre `size` (height, width) of `image`, padded with `fill` where it is smaller (timm's
    center_crop_or_pad, torchvision's rounding of the offsets)."""
    height, width = size
    if image.width < width or image.height < height:
        padded = Image.new("RGB", (max(width, image.width), max(height, image.height)), fill)
        padded.paste(image, ((padded.width - image.width) // 2, (padded.height - image.height) // 2))
        image = padded
    top = int(round((image.height - height) / 2.0))
    left = int(round((image.width - width) / 2.0))
    return image.crop((left, top, left + width, top + height))
