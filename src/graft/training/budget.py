"""How long a training step takes here, measured on a few batches before a long phase starts."""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..config import spoken_duration
from ..runtime import Runtime


def seconds_per_image(model: nn.Module, loader: DataLoader, *, runtime: Runtime, steps: int = 2) -> float:
    """A training step's time per image (forward, loss, backward; no optimizer step, so no weight
    changes), timed over `steps` batches after one warm-up batch. Gradients are cleared afterwards.

    The loader's shuffling and augmentation draw from the global random generators: callers that
    want a reproducible phase seed them after this.
    """
    device = runtime.device
    was_training = model.training
    model.to(device=device, memory_format=torch.channels_last).train()  # type: ignore[call-overload]
    multilabel = getattr(loader.dataset, "targets", None) is not None  # multi-hot rows: a sigmoid per class
    loss = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()
    timings: list[tuple[float, int]] = []  # (seconds, images) per batch
    try:
        for index, (pixels, labels) in enumerate(loader):
            if index > steps:
                break
            started = time.perf_counter()
            pixels = pixels.to(device=device, memory_format=torch.channels_last)
            with runtime.autocast(device):
                value = loss(model(pixels).float(), labels.to(device).float() if multilabel else labels.to(device))
            value.backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings.append((time.perf_counter() - started, len(labels)))
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    timed = timings[1:] or timings  # the first batch pays for allocation and kernel selection, where there are more
    return sum(t for t, _ in timed) / max(1, sum(n for _, n in timed))


def budget_left_for_another_epoch(*, seconds_left: float, epochs_done: int, epoch_seconds: float) -> str | None:
    """After image epoch `epochs_done` under auto: why to stop (the --budget leaves less than another
    epoch as long as those ran, `epoch_seconds`), or None. auto chose the epochs on an estimate made
    before the first (graft.advise.auto.FULL_BATCH_SPEEDUP); the epochs as they run hold the budget."""
    if seconds_left >= epoch_seconds:
        return None
    return (f"stopped fine-tuning after image epoch {epochs_done}: the --budget leaves "
            f"{spoken_duration(max(0.0, seconds_left))} and an epoch took {spoken_duration(epoch_seconds)}.")
