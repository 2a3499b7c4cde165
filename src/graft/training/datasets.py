"""Datasets and loaders for the two phases: cached features (head phase) and images (image phase)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    WeightedRandomSampler,
)

from ..features import FeatureSet


class FeatureViews(Dataset):
    """Cached features of one or more views of the same images; epoch e reads view e mod N.

    Indexed by a whole batch of positions at once: one fancy-index read of the memory map per batch
    instead of one per image keeps a head epoch in the milliseconds.
    """

    def __init__(self, views: list[FeatureSet], targets=None):
        """`targets`: what the head learns, one row per image (default: the views' class labels;
        multi-label data: its N x C multi-hot array, graft.data.discover.DataSplits.targets)."""
        if not views:
            raise ValueError("FeatureViews needs at least one view")
        self.views = views
        self.labels = torch.from_numpy(np.asarray(views[0].labels if targets is None else targets))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, positions):
        positions = np.sort(np.asarray(positions))
        features = self.views[self.epoch % len(self.views)].features[positions]
        return torch.from_numpy(np.asarray(features, dtype=np.float32)), self.labels[positions]


def balanced_sampler(labels, generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """Draws an epoch of len(labels) items, each class equally often on average: an item is drawn
    with probability 1 / (classes x its class's count), with replacement, so a rare class's few
    images recur within an epoch while a common class's are not all seen."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    return WeightedRandomSampler(weights.tolist(), num_samples=len(labels), replacement=True, generator=generator)


def feature_loader(dataset: FeatureViews, *, batch_size: int, shuffle: bool, seed: int = 0,
                   balanced: bool = False) -> DataLoader:
    """Whole batches of cached features; `balanced`: drawn by balanced_sampler instead of shuffled."""
    generator = torch.Generator().manual_seed(seed)
    sampler: Sampler
    if balanced:
        sampler = balanced_sampler(dataset.labels.numpy(), generator)
    else:
        sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size=batch_size, drop_last=False), batch_size=None)


def image_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, workers: int, labels=None,
                 processes: int = 1) -> DataLoader:
    """Shuffling draws from the global generator, seeded by the run (no torch.Generator here: one
    cannot be sent to the processes DDP spawns, and DistributedSampler seeds itself). With `labels`
    (one per image), batches are drawn by balanced_sampler instead; under DDP, Lightning splits that
    sampler's draws between the processes.

    A training loader drops an incomplete last batch (a 1-image batch breaks BatchNorm) only where
    each of the `processes` DDP processes still has a whole batch: 36 images over 2 processes in
    batches of 32 had left each process 18 images, no batch at all, and an image phase that trained
    nothing."""
    share = len(dataset) // max(1, processes)  # type: ignore[arg-type]  # the images each process sees
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and labels is None,
        sampler=balanced_sampler(labels) if labels is not None else None,
        num_workers=workers,
        persistent_workers=workers > 0,
        drop_last=(shuffle or labels is not None) and share > batch_size,
    )
