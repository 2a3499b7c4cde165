"""Images as the model saw them, and heatmaps blended over them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from ..data.config import DataConfig
from ..data.images import load_image
from ..data.transforms import eval_transform


def model_inputs(paths: Sequence[str | Path], config: DataConfig) -> torch.Tensor:
    """The images at `paths`, preprocessed for evaluation (resize, crop, normalise), as one batch.

    Unreadable files raise BadImageError, naming the file.
    """
    transform = eval_transform(config)
    return torch.stack([transform(load_image(path)) for path in paths])


def model_view(image: torch.Tensor, config: DataConfig) -> Image.Image:
    """One preprocessed image (3 x H x W) with the normalisation undone: what the model saw."""
    mean = torch.tensor(config.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(config.std, dtype=torch.float32)[:, None, None]
    pixels = (image.detach().float().cpu() * std + mean).clamp(0, 1)
    return Image.fromarray((pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def overlay(image: Image.Image, heatmap: torch.Tensor | np.ndarray, *, colormap: str = "jet", alpha: float = 0.5) -> Image.Image:
    """`heatmap` (h x w, values in [0, 1]) upsampled bilinearly to the image and blended over it."""
    values = np.asarray(heatmap, dtype=np.float32)
    upsampled = np.asarray(Image.fromarray(values).resize(image.size, Image.Resampling.BILINEAR))
    colours = colormaps[colormap](np.clip(upsampled, 0, 1))[..., :3]
    return Image.blend(image.convert("RGB"), Image.fromarray((colours * 255).round().astype(np.uint8)), alpha)
