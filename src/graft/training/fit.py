"""Fit a network with Lightning: the single place where graft builds a Trainer."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader

from ..errors import GraftError
from .callbacks import BestWeights, EpochProgress, History
from .module import ClassifierModule
from .resume_point import ResumePoint

if TYPE_CHECKING:
    from ..runtime import Runtime


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # one row per epoch run (see History)
    best_epoch: int | None = None  # the epoch (from 0) whose weights were kept; None: none beat initial_score


@dataclass(frozen=True)
class FitSettings:
    """How every fit of one run trains: where it keeps its files, the machine, and the optimiser's
    options that do not change between phases (graft.training.run.Run.fit_settings makes it)."""

    run_dir: Path  # checkpoints/ (best epoch, history, resume point) and logs/ go here
    runtime: Runtime  # devices, nodes, precision, progress (the loaders hold batch size and workers)
    patience: int = 5  # early stopping: epochs without a better val accuracy
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    class_weights: list[float] | None = None  # in the loss; None: unweighted
    plateau_patience: int = 2  # epochs without a lower val loss before the learning rate drops
    resume: bool = False  # go on from run_dir/checkpoints/PHASE-resume.pt where it exists
    classes: int | None = None  # the head's outputs (multi-label data: its metric needs them)
    multilabel: bool = False  # several labels per image: BCE, and the best epoch by val mAP (ClassifierModule)

    @property
    def monitor(self) -> str:
        """The validation figure early stopping and the best epoch follow."""
        return "val_map" if self.multilabel else "val_acc"


def quiet_lightning() -> None:
    """Lightning's banner lines (GPU available, TPU ...) are noise for graft's users."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # a resumed fit keeps its earlier rows in metrics.csv (_keep_earlier_rows): nothing is lost
    warnings.filterwarnings("ignore", message=".*Previous log files in this directory will be deleted.*")
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")  # frozen BatchNorm, on purpose


def fit(
    net: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    *,
    param_groups: list[dict],
    phase: str,
    epochs: int,
    settings: FitSettings,
    extra_callbacks: list[L.Callback] | None = None,
    initial_score: float | None = None,
) -> FitResult:
    """Train `net` for up to `epochs` with early stopping; leave it holding its best epoch's weights.

    With `initial_score` (the val figure `net` has now: settings.monitor), an epoch must beat it to be kept: a fit
    that only makes things worse returns `net` as it came. Every epoch boundary is saved in
    run_dir/checkpoints/PHASE-resume.pt; with `settings.resume`, a fit that finds it there goes on
    from it (graft.training.resume_point.ResumePoint).
    """
    quiet_lightning()
    runtime, folder = settings.runtime, settings.run_dir / "checkpoints"
    module = ClassifierModule(net, param_groups, weight_decay=settings.weight_decay,
                              label_smoothing=settings.label_smoothing, class_weights=settings.class_weights,
                              plateau_patience=settings.plateau_patience, classes=settings.classes,
                              multilabel=settings.multilabel)
    best = BestWeights(folder / f"{phase}-best.safetensors", monitor=settings.monitor, mode="max",
                       initial_score=initial_score)
    history = History(phase, folder / f"{phase}-history.json")
    progress = [EpochProgress(phase)] if runtime.progress else []
    logs = settings.run_dir / "logs"
    metrics_csv = logs / phase / "metrics.csv"
    earlier = _log_rows(metrics_csv) if settings.resume else []  # Lightning's CSV logger starts its file afresh
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="auto",
        devices=runtime.devices,
        num_nodes=runtime.num_nodes,
        strategy=_strategy(runtime.devices, runtime.num_nodes),
        precision=runtime.lightning_precision,
        callbacks=[best, history, EarlyStopping(monitor=settings.monitor, mode="max", patience=settings.patience),
                   LearningRateMonitor("epoch"), *progress, *(extra_callbacks or []),
                   ResumePoint(folder / f"{phase}-resume.pt", resume=settings.resume)],
        logger=[CSVLogger(logs, name=phase, version=""), TensorBoardLogger(logs, name=phase, version="")],
        enable_checkpointing=False,  # BestWeights keeps the best epoch, as safetensors
        enable_progress_bar=False,  # EpochProgress: epochs from 1, and lines rather than bars in a log file
        enable_model_summary=False,  # graft prints its own parameter summary
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(50, len(train_loader))),
    )
    try:
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    except SystemExit:
        # Lightning turns Ctrl-C into a silent exit(1) after its own clean-up: make it an interrupt
        # again, so graft can say what was interrupted and exit 130 like any interrupted command.
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        if earlier:
            _keep_earlier_rows(metrics_csv, earlier)
    # Read results back from disk: with several processes the callbacks ran in the workers.
    rows = History.load(history.path)
    if epochs and (not rows or any(row["train_loss"] is None for row in rows)):
        images = len(train_loader.dataset)  # type: ignore[arg-type]  # a map-style dataset
        raise GraftError(f"The {phase} phase trained on no batch: {images:,} images in batches of "
                         f"{runtime.batch_size} over {runtime.processes} process(es) left none a whole batch. "
                         "Use a smaller --batch-size, or fewer --devices. No model was saved.")
    _, best_epoch = best.restore(net)
    return FitResult(history=rows, best_epoch=best_epoch)


def _log_rows(path: Path) -> list[dict[str, str]]:
    import csv

    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _keep_earlier_rows(path: Path, earlier: list[dict[str, str]]) -> None:
    """A resumed fit's metrics.csv holds its epochs before the interruption too: the earlier rows up to
    the last one of an epoch before the first the resumed fit logged (the interrupted epoch is logged
    again, and the resumed fit counts its steps from 0), then the new rows."""
    import csv

    from ..io import atomic_path

    new = _log_rows(path)
    first = min((int(row["epoch"]) for row in new if row.get("epoch")), default=None)
    done = [index for index, row in enumerate(earlier) if row.get("epoch") and (first is None or int(row["epoch"]) < first)]
    kept = earlier if first is None else earlier[: done[-1] + 1] if done else []
    columns = list(dict.fromkeys(name for row in kept + new for name in row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary, temporary.open("x", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(kept + new)


def _strategy(devices: int | str, num_nodes: int) -> str:
    """One process: Lightning's default. Several on one machine: DDP in spawned processes.

    Spawning keeps everything around `fit` (data checks, feature extraction, saving) in this one
    process; the workers only train, and hand the best weights back through BestWeights' file.
    Across machines, each node starts its own graft (torchrun, SLURM), so plain DDP is used.
    """
    if num_nodes > 1:
        return "ddp"
    if isinstance(devices, int) and devices > 1:
        return "ddp_spawn"
    return "auto"
