"""A fit's state saved at every epoch boundary and restored after an interruption (ResumePoint), and
the one place graft sets Lightning's count of the epochs done (start_at_epoch)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn

from ..io import atomic_path
from .callbacks import BestWeights, History


class ResumePoint(L.Callback):
    """Everything a fit needs to go on after an interruption, saved at every epoch boundary.

    At the start of each epoch after the first (and once more when the fit ends), `path` gets, in one
    atomic write: the network's weights, the optimizer's and the learning-rate scheduler's states,
    early stopping's and BestWeights' states, the history so far, the number of epochs done, and the
    Python, numpy and torch random states, and the state of the training loader's own shuffling
    generator where it has one. A new fit given the same `path` restores all of it before
    its first epoch and starts at the next one, so it ends with the same weights as a fit that was
    never interrupted (bitwise, on CPU in fp32 with 0 loader workers; see docs/reliability.md).

    At an epoch's start the previous epoch is wholly done (Lightning steps a plateau scheduler after
    the epoch-end callbacks) and its data has not been shuffled yet. The file is a torch pickle of
    tensors and plain values, read back only with `weights_only=True`.
    """

    def __init__(self, path: str | Path, *, resume: bool):
        self.path = Path(path)
        self.resumed = resume and self.path.exists()  # BestWeights reads this: a resumed fit has its best already

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.resumed:
            return
        import torch

        state = torch.load(self.path, map_location="cpu", weights_only=True)
        net: nn.Module = pl_module.net  # type: ignore[assignment]
        net.load_state_dict(state["net"], strict=True)
        trainer.optimizers[0].load_state_dict(state["optimizer"])
        trainer.lr_scheduler_configs[0].scheduler.load_state_dict(state["scheduler"])
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            name = type(callback).__name__
            if name in state["callbacks"]:
                callback.load_state_dict(state["callbacks"][name])
        start_at_epoch(trainer, int(state["epochs_done"]))
        trainer.should_stop = bool(state["stopped"])
        _set_random_states(state["random"])
        generator = _shuffle_generator(trainer)
        if generator is not None and state.get("shuffle") is not None:
            generator.set_state(state["shuffle"])

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0 and trainer.is_global_zero:
            self._save(trainer, pl_module, stopped=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._save(trainer, pl_module, stopped=True)

    def _save(self, trainer: L.Trainer, pl_module: L.LightningModule, *, stopped: bool) -> None:
        import torch

        net: nn.Module = pl_module.net  # type: ignore[assignment]
        state = {
            "net": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "optimizer": trainer.optimizers[0].state_dict(),
            "scheduler": trainer.lr_scheduler_configs[0].scheduler.state_dict(),
            "callbacks": {type(c).__name__: c.state_dict() for c in trainer.callbacks  # type: ignore[attr-defined]
                          if isinstance(c, (BestWeights, History, EarlyStopping))},
            "epochs_done": trainer.current_epoch if not stopped else epochs_completed(trainer),
            "stopped": stopped,
            "random": _random_states(),
            # a loader that shuffles with its own generator (the head phase's): where its sequence is
            "shuffle": None if (generator := _shuffle_generator(trainer)) is None else generator.get_state(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as temporary:
            torch.save(state, temporary)


# Lightning counts the epochs a fit has gone through in its fit loop's progress tracker. Its public
# way to resume, `trainer.fit(ckpt_path=...)`, restores a checkpoint written by the epoch-end
# callbacks, before the fit loop steps the learning-rate schedulers, and on restart it does not step
# a ReduceLROnPlateau scheduler (lightning/pytorch/loops/fit_loop.py, _FitLoop.on_advance_end), so
# the resumed fit would differ from one never interrupted.
# graft saves at the next epoch's start instead, and must then tell Lightning how many epochs are
# done: these two functions are the only places graft reads or writes Lightning's counters, and
# tests/test_reliability.py::test_lightning_epoch_counters_are_where_resume_writes_them fails when a
# Lightning release moves them.
EPOCH_COUNTERS = ("ready", "started", "processed", "completed")


def start_at_epoch(trainer: L.Trainer, done: int) -> None:
    """Make `trainer`'s fit go on at epoch `done` (counted from 0): the epochs before it count as done."""
    progress = trainer.fit_loop.epoch_progress
    for counter in (progress.current, progress.total):
        for stage in EPOCH_COUNTERS:
            setattr(counter, stage, done)


def epochs_completed(trainer: L.Trainer) -> int:
    return trainer.fit_loop.epoch_progress.current.completed


def _shuffle_generator(trainer: L.Trainer):
    """The torch.Generator the training loader's sampler draws from, or None (the global one)."""
    loader = trainer.train_dataloader
    # A loader of whole batches (batch_size=None) holds a BatchSampler as its sampler: look inside it too.
    for sampler in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)):
        for candidate in (sampler, getattr(sampler, "sampler", None)):
            generator = getattr(candidate, "generator", None)
            if generator is not None:
                return generator
    return None


def _random_states() -> dict:
    import random

    import numpy as np
    import torch

    kind, keys, position, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": (kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), position,
                                                   has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_random_states(states: dict) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(states["python"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
