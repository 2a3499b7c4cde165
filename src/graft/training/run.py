"""One training run's state (`Run`), and the mechanics its steps and its strategy share.

graft.training.pipeline.train makes a `Run` and passes it through its steps (setup, phases,
finish); each step reads what the earlier ones left and adds its own. The strategy's hooks act on the
run through the same object (it meets graft.strategies.RunState), as Lightning's BaseFinetuning
acts on a LightningModule: they call the mechanics below and never reach into the loop.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..record import EpochRow, RunMetrics, RunRecord

if TYPE_CHECKING:
    from ..backbones import Backbone
    from ..config import TrainConfig
    from ..data.discover import DataSplits, Sample
    from ..evaluation import Evaluation, MultiLabelEvaluation
    from ..features import FeatureCache, FeatureSet
    from ..model import GraftModel
    from ..runtime import Runtime
    from .fit import FitResult


@dataclass
class Run:
    """What one run holds as it goes. Set by setup: the data, the config as run, the machine, the
    strategy, the network; then each step adds what it made (features, scores, the history, the
    evaluations, the record)."""

    data: str  # the folder or CSV the run reads (absolute)
    config: TrainConfig  # as run: auto's choices go in as they are made
    runtime: Runtime
    splits: DataSplits
    cache: FeatureCache
    run_dir: Path
    plan: Any  # the graft.strategies.Strategy that trains (strategies import nothing of training)
    net: Backbone
    model: GraftModel
    log: Callable[[str], None]
    started: float  # time.perf_counter() at the start
    resume: bool = False  # going on with an interrupted run in run_dir
    auto: bool = False  # --strategy auto chose `plan`
    good_enough: float = 1.0  # auto: fine-tune only below this probe accuracy on val
    class_weights: list[float] | None = None
    trainable: list[str] | None = None  # the backbone parameters the image phase trains
    initial_head: dict[str, torch.Tensor] = field(default_factory=dict)  # the new head before training
    trail: dict[str, Any] = field(default_factory=dict)  # auto's decisions and reasons, for graft.json
    notes: dict[str, Any] = field(default_factory=dict)  # advice, backbone choice: kept in graft.json
    requested: TrainConfig | None = None  # the config as given (strategy and backbone may be auto)
    decisions: dict[str, Any] = field(default_factory=dict)  # auto's timed decisions, kept in run.json for --resume
    scratch: dict[str, Any] = field(default_factory=dict)  # the strategy's own values for this run
    # What the steps make:
    history: list[EpochRow] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    val_features: FeatureSet | None = None  # plain-view val features while the backbone is frozen
    head_logits: np.ndarray | None = None  # val logits after the head phase
    head_score: float | None = None  # val accuracy after the head phase
    logreg_c: float | None = None
    audit: Any = None  # graft.audit.AuditResult
    evaluations: dict[str, Evaluation | MultiLabelEvaluation] = field(default_factory=dict)
    val_logits: np.ndarray | None = None  # of the model saved
    test_logits: np.ndarray | None = None
    engine: str | None = None  # what scored val and test (and made the frozen features they were scored on)
    thresholds: Any = None  # multi-label: each class's graft.evaluation.Thresholds, chosen on val
    metrics: RunMetrics | None = None  # metrics.json
    record: RunRecord | None = None  # graft.json
    stage: str = "the set-up of the run"  # what the run is doing: said if the user interrupts it
    saved: bool = False  # model.safetensors and graft.json are complete

    # --- what strategies may call (graft.strategies.RunState) -------------------------------------

    def say(self, message: str) -> None:
        self.log(message)

    def finetune_epochs(self) -> int:
        """Under auto, after the probe: the image epochs to run (0: keep the probe), from the probe's val
        accuracy and, where there is a budget, a training step timed on a few batches
        (graft.advise.auto.decide_finetune). Said, kept for graft.json, and written into run.json, so
        that `graft train --resume` runs the decision as made instead of measuring again."""
        from .resume import write_resume_file

        if "finetune_epochs" not in self.decisions:  # a resumed run runs the decision it made
            epochs, reason = self._decide_finetune()
            self.decisions.update(finetune_epochs=epochs, finetune_reason=reason)
            assert self.requested is not None  # set by setup
            write_resume_file(self.run_dir, data=self.data, config=self.requested, decisions=self.decisions)
        epochs, reason = self.decisions["finetune_epochs"], self.decisions["finetune_reason"]
        self.say(f"auto: {reason}")
        self.trail["fine_tuning"] = reason
        if epochs:
            self.config = self.config.replace(epochs=epochs)
        return epochs

    def enter(self, stage: str) -> None:
        """Begin the next step of the run (`stage` says it if the user interrupts the run), the memory
        the last one freed given back to the system: the C library keeps freed memory for later
        allocations, and a default run's peak was made of steps piled on what earlier ones had freed
        (issue 24, docs/benchmarks.md "Memory of a default run")."""
        from ..memory import give_back

        self.stage = stage
        give_back()

    def _decide_finetune(self) -> tuple[int, str]:
        from ..advise.auto import VAL_COST, decide_finetune, epoch_seconds
        from ..config import parse_duration

        config, splits = self.config, self.splits
        budget = parse_duration(config.strategy.budget)
        seconds_spent = time.perf_counter() - self.started
        seconds_left = None if budget is None else budget - seconds_spent
        estimate, timed_on, probe, figure = None, "", self.head_score or 0.0, "on val"
        if self.multilabel:  # as accuracy is: the share of val images answered wholly right (every label, at 0.5)
            assert self.head_logits is not None  # the probe's val answers
            probe = float(((self.head_logits >= 0) == self.targets(splits.val).astype(bool)).all(axis=1).mean())
            figure = "exact match on val (every label of an image right)"
        if probe < self.good_enough and seconds_left is not None and seconds_left > 0:
            # keep time for the evaluation after the last epoch (val and test, forward passes)
            evaluation = VAL_COST * (len(splits.val) + len(splits.test))

            def epoch(per_image: float) -> float:
                return epoch_seconds(per_image, train_images=len(splits.train), val_images=len(splits.val))

            per_image, timed_on = self._step_seconds()
            estimate = epoch(per_image)
            seconds_left -= per_image * evaluation
        decision = decide_finetune(probe_accuracy=probe, epochs=config.optim.epochs, epoch_seconds=estimate,
                                   seconds_left=seconds_left, seconds_spent=seconds_spent, good_enough=self.good_enough,
                                   figure=figure, timed_on=timed_on)
        return decision.epochs, decision.reason

    def _step_seconds(self) -> tuple[float, str]:
        """A training step's seconds per image on the full batch, for auto's decision, and how it was
        found where not by timing full batches ("" where it was).

        On a CPU it is estimated from steps on SMALL_BATCH images, which take little memory (a full
        batch at 224 px held 1.5 GB above the model, and the default run on 10,000 images peaked
        there: issue 24), as FULL_BATCH_SPEEDUP times faster per image. On a GPU it is timed on full
        batches, as the image phase will run. The memory the steps took
        is given back to the system afterwards."""
        from ..advise.auto import FULL_BATCH_SPEEDUP, SMALL_BATCH
        from ..data.dataset import ImageDataset
        from ..data.transforms import train_transform
        from ..memory import give_back
        from .budget import seconds_per_image
        from .datasets import image_loader

        model, runtime, splits = self.model, self.runtime, self.splits
        views = ImageDataset(splits.train, train_transform(self.net.data_config, self.config.augment.to_augment(), pixels=True),
                             targets=self.targets(splits.train) if self.multilabel else None)

        def timed(batch_size: int, steps: int) -> float:
            loader = image_loader(views, batch_size=batch_size, shuffle=True, workers=runtime.workers)
            return seconds_per_image(model, loader, runtime=runtime, steps=steps)

        model.freeze_backbone(self.trainable)
        try:
            if runtime.device.type == "cpu" and runtime.batch_size > SMALL_BATCH:
                return timed(SMALL_BATCH, steps=4) / FULL_BATCH_SPEEDUP, f"estimated from steps on {SMALL_BATCH} images"
            return timed(runtime.batch_size, steps=2), ""
        finally:
            model.freeze_backbone()
            give_back()

    def skip_images(self, *, recorded_as: str) -> None:
        from ..strategies import get_strategy

        self.plan, self.trainable = get_strategy(recorded_as), None
        self.config = self.config.replace(strategy=recorded_as)

    def fresh_head(self) -> None:
        self.model.head.load_state_dict(self.initial_head)

    def train_head(self, views: list[int | None]) -> None:
        """The head alone, by AdamW on cached features of the frozen backbone, `views` cycling by epoch."""
        from .callbacks import EpochSetter
        from .datasets import FeatureViews, feature_loader
        from .fit import fit

        tick = time.perf_counter()
        splits = self.splits
        train_set = FeatureViews([self.features(splits.train, "train", view) for view in views],
                                 targets=self.targets(splits.train))
        val = self.val_features if self.val_features is not None else self.features(splits.val, "val")
        # Each phase draws from its own seed: the same whatever ran before it (a cold run or one whose
        # features came from the cache), which is what makes a resumed run the same run.
        self.seed()
        result = fit(
            self.model.head,
            feature_loader(train_set, batch_size=self.runtime.batch_size, shuffle=True, seed=self.config.data.seed,
                           balanced=self.balanced_batches),
            feature_loader(FeatureViews([val], targets=self.targets(splits.val)), batch_size=256, shuffle=False),
            param_groups=[{"params": list(self.model.head.parameters()), "lr": self.config.optim.lr}],
            phase="head", epochs=self.config.optim.head_epochs, extra_callbacks=[EpochSetter(train_set)],
            settings=self.fit_settings(processes=1),  # milliseconds an epoch: one process
        )
        self.history += [EpochRow(**row) for row in result.history]
        self.timings["head_s"] = self.timings.get("head_s", 0.0) + time.perf_counter() - tick

    def val_right(self, *, head_phase: bool = False) -> np.ndarray:
        """Which val images the model answers right: its class; for multi-label data, exactly the
        image's labels, each class's sigmoid read at 0.5."""
        logits = self.head_logits if head_phase else self.logits(self.splits.val)
        assert logits is not None, "the head phase's val logits are asked for where no head phase ran"
        if self.multilabel:
            return ((logits > 0) == (self.targets(self.splits.val) > 0.5)).all(axis=1)
        return logits.argmax(axis=1) == self.labels(self.splits.val)

    # --- mechanics the steps share ----------------------------------------------------------------

    @property
    def seed_value(self) -> int:
        return self.config.data.seed

    @property
    def multilabel(self) -> bool:
        return self.splits.task == "multilabel"

    def targets(self, samples: list[Sample]) -> np.ndarray:
        """What the model learns for `samples`: class indices, or multi-hot rows for multi-label data."""
        return self.splits.targets(samples)

    def score(self, logits: np.ndarray, samples: list[Sample]) -> float:
        """The val figure fits follow (graft.training.module): accuracy, or for multi-label data the
        macro mean average precision, computed as the training loop computes it."""
        if not self.multilabel:
            return float((logits.argmax(axis=1) == self.labels(samples)).mean())
        from torchmetrics.functional.classification import multilabel_average_precision

        targets = torch.from_numpy(self.targets(samples)).long()
        return float(multilabel_average_precision(torch.from_numpy(logits).float().sigmoid(), targets,
                                                  num_labels=targets.shape[1], average="macro", thresholds=None))

    @property
    def balanced_batches(self) -> bool:
        """--sampler balanced: batches balance the classes, so the loss is not weighted too."""
        return self.config.optim.sampler == "balanced"

    def seed(self, offset: int = 0) -> None:
        seed_everything(self.seed_value + offset)

    def features(self, samples: list[Sample], split: str, view: int | None = None) -> FeatureSet:
        """The frozen backbone's features of `samples` (plain, or augmented view `view`), from the cache."""
        from ..features import backbone_features

        return backbone_features(self.net, samples, split=split, runtime=self.runtime, cache=self.cache, view=view,
                                 augment=self.config.augment.to_augment(), seed=self.seed_value)

    def logits(self, samples: list[Sample], features: FeatureSet | None = None, *, predictor=None) -> np.ndarray:
        """The model's log-probabilities (or logits: the same answers; for multi-label data, each class's
        logit) for `samples`: from their cached `features` while the backbone is frozen (what the whole
        model gives then), else through the whole model as graft.load would predict it (`predictor`:
        that Classifier, made once by `predictor()`, where several calls share it)."""
        if features is not None:
            head, was_training = self.model.head, self.model.head.training
            try:
                with torch.inference_mode():
                    return head.eval()(torch.from_numpy(np.asarray(features.features, dtype=np.float32))).numpy()
            finally:
                head.train(was_training)
        predictor = predictor or self.predictor()
        probabilities = predictor.probabilities_of([sample.path for sample in samples],
                                                   batch_size=self.runtime.batch_size * 2)
        with np.errstate(divide="ignore"):
            if self.multilabel:  # each class's sigmoid, as its logit: float64, +-inf where the sigmoid is 1 or 0
                probabilities = probabilities.astype(np.float64)
                return np.log(probabilities) - np.log1p(-probabilities)
            return np.log(probabilities)

    def predictor(self):
        """The model as it stands, as a graft Classifier predicts with it (its engine, fp32; a sigmoid per
        class for multi-label data). On a CPU, its ONNX graph is made once per model and process, and
        the run's export takes it as it is (graft.export.cached.unsaved_graph)."""
        from ..classifier import Classifier

        return Classifier(self.model, self.splits.classes, runtime=self.runtime, task=self.splits.task)

    def labels(self, samples: list[Sample]) -> np.ndarray:
        return np.array([sample.label for sample in samples], dtype=np.int64)

    def fit_settings(self, *, processes: int | None = None):
        """How `fit` trains in this run: the optimiser's options, the run folder, the machine."""
        from .fit import FitSettings

        optim = self.config.optim
        runtime = self.runtime if processes is None else self.runtime.but(devices=processes, num_nodes=1)
        return FitSettings(run_dir=self.run_dir, runtime=runtime, patience=optim.patience,
                           weight_decay=optim.weight_decay, label_smoothing=optim.label_smoothing,
                           class_weights=None if self.balanced_batches else self.class_weights, resume=self.resume,
                           classes=len(self.splits.classes), multilabel=self.multilabel)

    def param_summary(self, phase: str) -> str:
        model = self.model
        counts, backbone, head = model.param_counts(), model.param_counts(model.backbone), model.param_counts(model.head)
        return (f"Parameters ({phase}): total {counts.total:,} | trainable {counts.trainable:,} | "
                f"non-trainable {counts.frozen:,}  [backbone {backbone.trainable:,}/{backbone.total:,} trainable, "
                f"head {head.trainable:,}]")

    def trained_params(self) -> int:
        """The head's parameters, plus the backbone's that the image phase trained."""
        head = self.model.param_counts(self.model.head).total
        if self.trainable is None:
            return head
        params = dict(self.net.named_parameters())
        return head + sum(params[name].numel() for name in self.trainable)

    def fit_images(self) -> FitResult:
        """The image phase's fit: the backbone parameters `trainable` names and the head, on images."""
        from ..data.dataset import ImageDataset
        from ..data.transforms import eval_transform, train_transform
        from .datasets import image_loader
        from .fit import fit

        optim, runtime, net = self.config.optim, self.runtime, self.net
        names = set(self.trainable or [])
        groups = [{"params": list(self.model.head.parameters()), "lr": optim.lr}]
        backbone_params = [p for n, p in net.named_parameters() if n in names]
        if backbone_params:
            groups.append({"params": backbone_params, "lr": optim.lr * self.plan.backbone_lr_ratio(optim)})
        self.seed(1)  # see train_head
        # uint8 pixels: the backbone normalises whole batches (a quarter of the bytes between processes)
        augment = self.config.augment.to_augment() if self.plan.augment_images else None
        targets = self.targets if self.multilabel else (lambda samples: None)  # single-label: each sample's label
        train = ImageDataset(self.splits.train, train_transform(net.data_config, augment, pixels=True),
                             targets=targets(self.splits.train))
        val = ImageDataset(self.splits.val, eval_transform(net.data_config, pixels=True), targets=targets(self.splits.val))
        labels = [sample.label for sample in self.splits.train] if self.balanced_batches else None
        return fit(
            self.model,
            image_loader(train, batch_size=runtime.batch_size, shuffle=True, workers=runtime.workers, labels=labels,
                         processes=runtime.processes),
            image_loader(val, batch_size=runtime.batch_size * 2, shuffle=False, workers=runtime.workers),
            param_groups=groups, phase="images", epochs=optim.epochs, initial_score=self.plan.image_baseline(self),
            settings=self.fit_settings(), extra_callbacks=self.plan.image_callbacks(self),
        )


def seed_everything(seed: int) -> None:
    """What Lightning's seed_everything(seed, workers=True) does, without importing Lightning (1.3 s)
    on runs that never train with it: Python, numpy and torch (CPU and CUDA) seeded, and the
    variables that make Lightning seed its DataLoader workers when an image phase runs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    os.environ["PL_SEED_WORKERS"] = "1"
