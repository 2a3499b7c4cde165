"""A torch Dataset over image files: each item is decoded with `load_image`, then transformed.

Decoding goes through `load_image` so that training, evaluation and prediction all see exactly the
same RGB pixels (EXIF rotation, transparency on white, 16-bit scaling) as the data check did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .discover import Sample
from .images import load_image


class ImageDataset(Dataset):
    """`(transform(image), target)` for each sample: its label (-1 for unlabelled images), or its row
    of `targets` where given (multi-label data: graft.data.discover.DataSplits.targets, N x C).

    `draft_size` is passed to `load_image`: set it to about the model's input size to decode big
    JPEGs at reduced scale, leave it None for full-resolution decoding.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable[[Image.Image], Tensor],
        *,
        draft_size: tuple[int, int] | None = None,
        targets=None,
    ):
        self.samples = list(samples)
        self.transform = transform
        self.draft_size = draft_size
        self.targets = targets

    @classmethod
    def from_paths(
        cls,
        paths: Sequence[str | Path],
        transform: Callable[[Image.Image], Tensor],
        *,
        draft_size: tuple[int, int] | None = None,
    ) -> ImageDataset:
        """Unlabelled images, for prediction: every label is -1."""
        return cls([Sample(Path(path), -1) for path in paths], transform, draft_size=draft_size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        target = sample.label if self.targets is None else self.targets[index]
        return self.transform(load_image(sample.path, draft_size=self.draft_size)), target
