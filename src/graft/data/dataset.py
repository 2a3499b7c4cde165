"""A torch Dataset over image files: load safely, transform, return (tensor, label)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from torch.utils.data import Dataset

from .discover import Sample
from .images import load_image


class ImageDataset(Dataset):
    def __init__(self, samples: Sequence[Sample], transform: Callable, *, draft_size: tuple[int, int] | None = None):
        self.samples = list(samples)
        self.transform = transform
        self.draft_size = draft_size

    @classmethod
    def from_paths(cls, paths: Sequence[str | Path], transform: Callable) -> "ImageDataset":
        return cls([Sample(Path(p), -1) for p in paths], transform)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        return self.transform(load_image(sample.path, draft_size=self.draft_size)), sample.label
