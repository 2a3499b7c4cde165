"""How images must be prepared for a backbone: size, normalisation, interpolation and crop.

It comes from the backbone's pretrained config (`graft.backbones`), and everything that turns images
into model inputs reads it (`graft.data.transforms`, the fast loaders, `graft.explain`). torch is
imported only where a batch is normalised, so reading a saved model's settings stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DataConfig:
    """How images must be prepared for this backbone; it comes from its pretrained config."""

    input_size: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    crop_mode: str = "center"

    @property
    def image_size(self) -> int:
        return self.input_size[-1]

    def normalize(self, pixels):
        """A uint8 batch (N, 3, H, W, values 0-255) -> the normalised float input, channels_last.

        The fast loaders stop at uint8 pixels (a quarter of the bytes between processes) and this
        finishes the job on the whole batch at once, on the device, in a few vectorised operations:
        per image in a loader process, the float conversion and normalisation cost more than
        decoding a CIFAR JPEG (timm's prefetcher does the same).
        """
        import torch

        mean = torch.tensor(self.mean, device=pixels.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, -1, 1, 1)
        x = pixels.contiguous(memory_format=torch.channels_last).float()
        return x.mul_(1 / (255 * std)).sub_(mean / std)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, values: dict) -> DataConfig:
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**fields)
