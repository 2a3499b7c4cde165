"""Callbacks graft adds to Lightning's own (early stopping, LR monitor, loggers); the one that resumes
a fit is graft.training.resume_point.ResumePoint."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import lightning as L
from safetensors.torch import load_file, save_file
from torch import nn

from ..io import atomic_path, write_json_atomic


class BestWeights(L.Callback):
    """Keep the weights of the best epoch by a validation metric, as safetensors (never pickle).

    Lightning's ModelCheckpoint writes pickled .ckpt files; graft's model files are safetensors, so
    the best checkpoint is one too, written atomically (graft.io: a temporary file, then a rename).
    """

    def __init__(self, path: str | Path, monitor: str = "val_acc", mode: str = "max", initial_score: float | None = None):
        self.path = Path(path)
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = initial_score  # the score of the weights the fit starts from, if known
        self.best_epoch: int | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        resumed = any(getattr(c, "resumed", False) for c in trainer.callbacks)  # type: ignore[attr-defined]  # ResumePoint
        if self.best is not None and not resumed:  # an epoch must beat the starting point to replace it
            self._save(trainer, pl_module)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]

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
            net: nn.Module = pl_module.net  # type: ignore[assignment]  # ClassifierModule's network
            state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
            with atomic_path(self.path) as temporary:
                save_file(state, str(temporary))
            # The score goes to disk too: under ddp_spawn this object lives in a worker process.
            write_json_atomic(self.path.with_suffix(".json"), {"best": self.best, "best_epoch": self.best_epoch})

    def restore(self, net) -> tuple[float | None, int | None]:
        """Load the best epoch's weights into `net`; return (best score, best epoch index)."""
        if not self.path.exists():
            return None, None
        net.load_state_dict(load_file(str(self.path)), strict=True)
        saved = json.loads(self.path.with_suffix(".json").read_text())
        return saved["best"], saved["best_epoch"]


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

    def state_dict(self) -> dict:
        return {"rows": [dict(row) for row in self.rows]}

    def load_state_dict(self, state: dict) -> None:
        self.rows = [dict(row) for row in state["rows"]]

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
                **({"val_map": metrics["val_map"]} if "val_map" in metrics else {}),
                "lr": max(group["lr"] for group in trainer.optimizers[0].param_groups),
                "epoch_time_s": time.perf_counter() - self._start,
            }
        )
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, self.rows)


class StopWhenBehind(L.Callback):
    """Stop a fit after an epoch where `judge(best val figure so far, epochs done)` gives a reason
    (None: go on); the reason is said through `say` once and kept in `reason`. The best so far is
    read from the fit's History, so a resumed fit counts the epochs before the interruption too."""

    def __init__(self, judge, *, monitor: str, say=None):
        self.judge, self.monitor, self.say = judge, monitor, say
        self.reason: str | None = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # after the epoch's validation, as History
        history = next((c for c in trainer.callbacks if isinstance(c, History)), None)
        scores = [row[self.monitor] for row in (history.rows if history else []) if row.get(self.monitor) is not None]
        if not scores or self.reason is not None or trainer.current_epoch + 1 >= (trainer.max_epochs or 0):
            return
        self.reason = self.judge(max(scores), trainer.current_epoch + 1)
        if self.reason is not None:
            trainer.should_stop = True
            if self.say and trainer.is_global_zero:
                self.say(self.reason)


class EpochSetter(L.Callback):
    """Tell a dataset which epoch it is (cached augmented views cycle one per epoch)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.dataset.set_epoch(trainer.current_epoch)


class EpochProgress(L.Callback):
    """How a fit is going, epochs counted from 1, readable in a terminal and in a log file alike.

    In a terminal (stderr a TTY): one tqdm bar per epoch over its train and val batches, described
    as "head 3/15" and left on screen with the epoch's losses and accuracies. Elsewhere, where a
    bar's carriage returns would pile up unseen: exactly one line per epoch on stderr, e.g.
    `head epoch 3/15: train loss 0.512 acc 81.2% | val loss 0.601 acc 78.0% | 1.2 s`.
    Only the global-zero process reports; `fit` leaves this callback out when progress is off.
    """

    def __init__(self, phase: str):
        self.phase = phase
        self._bar = None
        self._start = 0.0

    def _reports(self, trainer: L.Trainer) -> bool:
        return trainer.is_global_zero and not trainer.sanity_checking

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        if not self._reports(trainer) or not sys.stderr.isatty():
            return
        from tqdm.auto import tqdm

        self._close()
        total = trainer.num_training_batches
        self._bar = tqdm(total=total if math.isfinite(total) else None, unit="batch", leave=True, dynamic_ncols=True,
                         desc=f"{self.phase} {trainer.current_epoch + 1}/{trainer.max_epochs}", file=sys.stderr)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning knows the number of val batches only once validation starts.
        if self._bar is not None and self._bar.total is not None and not trainer.sanity_checking:
            batches = sum(trainer.num_val_batches)
            if math.isfinite(batches):
                self._bar.total += int(batches)
                self._bar.refresh()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._bar is not None and not trainer.sanity_checking:
            self._bar.update(1)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after this epoch's validation, so both train and val aggregates are in.
        if not self._reports(trainer):
            return
        metrics = trainer.callback_metrics
        summary = f"train {_loss_and_accuracy(metrics, 'train')} | val {_loss_and_accuracy(metrics, 'val')}"
        if self._bar is not None:
            self._bar.set_postfix_str(summary, refresh=False)
            self._close()
        elif not sys.stderr.isatty():
            seconds = time.perf_counter() - self._start
            print(f"{self.phase} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {summary} | {seconds:.1f} s",
                  file=sys.stderr, flush=True)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._close()

    def on_fit_end(self, trainer, pl_module) -> None:
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_bar": None}  # ddp_spawn pickles callbacks; a bar stays where it was drawn


def _loss_and_accuracy(metrics: dict, stage: str) -> str:
    loss, accuracy = metrics.get(f"{stage}_loss"), metrics.get(f"{stage}_acc")
    loss_text = "-" if loss is None else f"{float(loss):.3f}"
    accuracy_text = "-" if accuracy is None else f"{float(accuracy):.1%}"
    return f"loss {loss_text} acc {accuracy_text}"
