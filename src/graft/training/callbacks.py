"""Callbacks graft adds to Lightning's own (early stopping, LR monitor, loggers)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import lightning as L
from safetensors.torch import load_file, save_file


class BestWeights(L.Callback):
    """Keep the weights of the best epoch by a validation metric, as safetensors (never pickle).

    Lightning's ModelCheckpoint writes pickled .ckpt files; graft's model files are safetensors, so
    the best checkpoint is one too, written to a temporary name and renamed.
    """

    def __init__(self, path: str | Path, monitor: str = "val_acc", mode: str = "max", initial_score: float | None = None):
        self.path = Path(path)
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = initial_score  # the score of the weights the fit starts from, if known
        self.best_epoch: int | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.best is not None:  # an epoch must beat the starting point to replace it
            self._save(trainer, pl_module)

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if math.isnan(value) or not self._improved(value):
            return
        self.best, self.best_epoch = value, trainer.current_epoch
        self._save(trainer, pl_module)

    def _save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().cpu().contiguous() for k, v in pl_module.net.state_dict().items()}
            temporary = self.path.with_name(self.path.name + ".tmp")
            save_file(state, str(temporary))
            os.replace(temporary, self.path)
            # The score goes to disk too: under ddp_spawn this object lives in a worker process.
            _write_json(self.path.with_suffix(".json"), {"best": self.best, "best_epoch": self.best_epoch})

    def restore(self, net) -> tuple[float | None, int | None]:
        """Load the best epoch's weights into `net`; return (best score, best epoch index)."""
        if not self.path.exists():
            return None, None
        net.load_state_dict(load_file(str(self.path)), strict=True)
        saved = json.loads(self.path.with_suffix(".json").read_text())
        return saved["best"], saved["best_epoch"]


def _write_json(path: Path, data) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path)


class History(L.Callback):
    """One row per epoch: losses, accuracies, learning rate and wall-clock time, also kept in `path`."""

    def __init__(self, phase: str, path: str | Path):
        self.phase = phase
        self.path = Path(path)
        self.rows: list[dict] = []
        self._start = 0.0

    @staticmethod
    def load(path: str | Path) -> list[dict]:
        path = Path(path)
        return json.loads(path.read_text()) if path.exists() else []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Runs after this epoch's validation, so both train and val aggregates are in.
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        self.rows.append(
            {
                "phase": self.phase,
                "epoch": trainer.current_epoch + 1,
                "train_loss": metrics.get("train_loss"),
                "train_acc": metrics.get("train_acc"),
                "val_loss": metrics.get("val_loss"),
                "val_acc": metrics.get("val_acc"),
                "lr": max(group["lr"] for group in trainer.optimizers[0].param_groups),
                "epoch_time_s": time.perf_counter() - self._start,
            }
        )
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write_json(self.path, self.rows)


class EpochSetter(L.Callback):
    """Tell a dataset which epoch it is (cached augmented views cycle one per epoch)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.dataset.set_epoch(trainer.current_epoch)
