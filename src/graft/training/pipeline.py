"""graft.train: from a folder of labelled images to a trained, evaluated, saved classifier.

Read top to bottom, this is the whole procedure:
1. find and check the data; build the backbone the strategy asks for, and a new head;
2. head phase (strategies with one; the backbone is frozen): features once per image and view,
   from the cache when possible; the data audit reads the plain-view ones; then the head trains on
   them (logistic regression, or AdamW over augmented views);
3. image phase (strategies with one): the stages the strategy names train on images, at the
   strategy's fraction of the head's learning rate, starting from the head the head phase made;
4. evaluate on val (and test), save model.safetensors + graft.json in the run folder;
5. report: report.html and report.md (curves, confusion matrices, per-class metrics, the most
   confident mistakes with their activation maps, the audit), then metrics.json with every timing.

Every decision about what trains is the strategy's (graft.strategies); every option comes from one
`TrainConfig` (graft.config); every machine setting from one `Runtime` (graft.runtime).
"""

from __future__ import annotations

import os
import random
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..classifier import Classifier, predict_logits
from ..config import AUTO, TrainConfig
from ..data.dataset import ImageDataset
from ..data.discover import DataSplits, find_data, write_skipped_report
from ..data.transforms import eval_transform, train_transform
from ..errors import GraftError
from ..evaluation import Evaluation, evaluate_predictions
from ..export import save_model
from ..features import FeatureCache, FeatureSet, backbone_features
from ..io import check_output_folder, new_run_dir, write_json_atomic
from ..model import GraftModel
from ..record import DataSummary, EpochRow, ParamCounts, RunMetrics, RunRecord, library_versions
from ..runtime import Runtime
from ..strategies import Strategy, get_strategy


@dataclass
class RunResult:
    run_dir: Path
    classifier: Classifier
    record: RunRecord  # what graft.json holds
    metrics: RunMetrics  # what metrics.json holds

    @property
    def history(self) -> list[EpochRow]:
        return self.metrics.history

    @property
    def val(self) -> Evaluation:
        return self.metrics.val


# A run whose head is not made of graft's own layers (so its export cannot be put together from
# the backbone's graph, graft.export.cached) is traced whole at its end (about 11 s for Lite0 at
# 224 px: under a tenth of such a run) only if it trained at least this long, else when first predicted.
EXPORT_AFTER_SECONDS = 120.0


def train(
    data: str | Path,
    config: TrainConfig | None = None,
    *,
    log: Callable[[str], None] | None = print,
    progress: bool = True,
    resume: str | Path | None = None,
    **options,
) -> RunResult:
    """Train a classifier on `data` by transfer learning.

    `config` holds every option (graft.config.TrainConfig; `graft train --help` explains each);
    keyword `options` override it by name, so `train("photos/", strategy="partial", epochs=3)` and
    `train("photos/", TrainConfig().replace(strategy="partial"), epochs=3)` are the same run.
    `epochs` counts image-phase epochs, `head_epochs` epochs of the head on cached features.
    `log` receives progress sentences (None: silent); `progress` shows bars or per-epoch lines.
    `resume`: the folder of an interrupted run (use `resume_run`, which reads its data and config):
    the run goes on in that folder and ends with the same model as a run never interrupted.
    """
    config = (config or TrainConfig()).replace(**options)
    say = log or (lambda message: None)
    started = time.perf_counter()
    if config.strategy.strategy != AUTO:  # a bad combination fails now, before any data is read
        get_strategy(config.strategy.strategy).check(config)
    runtime = config.runtime.resolve(progress=progress)
    check_output_folder(config.output.out)
    seed = config.data.seed
    _seed_everything(seed)

    # 1. Data, then the strategy (measured from the data with "auto"), backbone and head.
    splits = find_data(data, val_split=config.data.val_split, seed=seed)
    say(splits.describe())
    advice, auto, auto_trail, good_enough = None, config.strategy.strategy == AUTO, {}, 1.0
    cache = FeatureCache(Path(config.output.cache_dir) / "features" if config.output.cache_dir else None)
    from ..audit.checks import class_weights  # scikit-learn: imported when a run starts, not with graft

    weights = class_weights(splits, config.optim.class_weight)
    backbone_choice = None
    if config.strategy.backbone == AUTO:  # the offline backbone whose features probe best (graft.advise.backbone)
        from ..advise.backbone import choose_backbone

        backbone_choice = choose_backbone(splits.train, img_size=config.data.img_size, seed=seed, runtime=runtime,
                                          cache=cache, balanced=weights is not None, budget=config.strategy.budget,
                                          weights=config.strategy.weights, say=say)
        say(backbone_choice.describe())
        config = config.replace(backbone=backbone_choice.backbone)
    if auto:
        from ..advise import advise_splits
        from ..advise.auto import auto_plan

        advice = advise_splits(splits, backbone=config.strategy.backbone, weights=config.strategy.weights,
                               img_size=config.data.img_size, seed=seed, runtime=runtime)
        chosen = auto_plan(advice, budget=config.strategy.budget)
        say(f"{advice.headline()}\n{chosen.describe()}")
        config = config.replace(**chosen.options)
        auto_trail = {"strategy": chosen.strategy, "reasons": chosen.reasons}  # kept in graft.json with the evidence
        good_enough = chosen.good_enough
    plan = get_strategy(config.strategy.strategy)
    plan.check(config)
    _seed_everything(seed)  # the new head starts the same whatever auto measured before it
    net, model = _build_model(config, plan, classes=len(splits.classes))
    # probe-finetune's second head starts where finetune's head starts, so that when it fine-tunes it is finetune
    initial_head = ({name: value.clone() for name, value in model.head.state_dict().items()}
                    if plan.fresh_head_for_images else None)
    trainable = plan.trainable(net, config.strategy) if plan.image_phase else None  # a bad --unfreeze fails here
    if resume is None:
        run_dir = new_run_dir(config.output.out, config.output.name or f"{AUTO if auto else plan.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        # What `graft train --resume` needs to run the same thing again: the data and the config as run.
        write_json_atomic(run_dir / RESUME_FILE, {"data": str(Path(data).resolve()), "config": config.to_dict()})
    else:
        run_dir = Path(resume)
        say(f"Resuming {run_dir}: cached features and the last completed epoch are reused.")
    if splits.skipped:
        write_skipped_report(splits.skipped, run_dir / "skipped.json")
        say(f"Skipped {len(splits.skipped)} unreadable or non-image files: see {run_dir / 'skipped.json'}")
    say(f"Backbone {config.strategy.backbone} ({net.weights_source}), input {net.data_config.image_size} px, "
        f"strategy {plan.name}: {plan.summary}")

    stage = _Stage(run_dir)  # what was being done if the user interrupts
    with stage:
        history: list[EpochRow] = []
        timings: dict[str, float] = {}
        optim = config.optim
        balanced_batches = optim.sampler == "balanced"  # then the batches are balanced and the loss is not weighted
        if weights is not None:
            say("Class weights: balanced (" + ("--class-weight balanced" if optim.class_weight == "balanced" else
                "some classes have far fewer training images; --class-weight none to turn this off") + ")"
                + (", in the logistic fit; the batches are balanced instead of the loss." if balanced_batches else "."))
        if balanced_batches:
            say("Batches: balanced (--sampler balanced): each class is drawn equally often; the loss is unweighted.")
        training: dict[str, Any] = dict(run_dir=run_dir, patience=optim.patience, weight_decay=optim.weight_decay,
                                        label_smoothing=optim.label_smoothing,
                                        class_weights=None if balanced_batches else weights)

        def train_head(train_views: list[FeatureSet], val_features: FeatureSet) -> list[EpochRow]:
            """The head alone, by gradient descent on cached features of the frozen backbone."""
            from .callbacks import EpochSetter
            from .datasets import FeatureViews, feature_loader
            from .fit import fit

            # Each phase draws from its own seed: the same whatever ran before it (a cold run or one
            # whose features came from the cache), which is what makes a resumed run the same run.
            _seed_everything(seed)
            train_set = FeatureViews(train_views)
            result = fit(
                model.head,
                feature_loader(train_set, batch_size=runtime.batch_size, shuffle=True, seed=seed, balanced=balanced_batches),
                feature_loader(FeatureViews([val_features]), batch_size=256, shuffle=False),
                param_groups=[{"params": list(model.head.parameters()), "lr": optim.lr}],
                phase="head", epochs=optim.head_epochs, extra_callbacks=[EpochSetter(train_set)],
                runtime=runtime.but(devices=1, num_nodes=1),  # milliseconds an epoch: one process
                resumable=True, resume=resume is not None,
                **training,
            )
            return [EpochRow(**row) for row in result.history]

        # 2. Head phase: the backbone is frozen, so it runs once per image (and view), into the cache.
        stage.name = "the head phase (features of the frozen backbone, then the head)"
        val_features, head_score, chosen_c, audit_result = None, None, None, None
        if plan.head_phase is not None:
            model.freeze_backbone()
            say(_param_summary(model, "head phase"))
            tick = time.perf_counter()
            augment = config.augment.to_augment()

            def features(samples, split: str, view: int | None = None) -> FeatureSet:
                return backbone_features(net, samples, split=split, runtime=runtime, cache=cache, view=view,
                                         augment=augment, seed=seed)

            views = plan.head_views(config.augment)  # [None]: the plain view only
            train_views = [features(splits.train, "train", view) for view in views]
            val_features = features(splits.val, "val")
            timings["features_s"] = time.perf_counter() - tick
            if config.output.audit:  # now, while the backbone is pretrained and frozen: its plain-view features are the audit's
                tick = time.perf_counter()
                audit_result = _audit_data(splits, features, plain_train=train_views[0] if views == [None] else None,
                                           val_features=val_features, seed=seed, run_dir=run_dir)
                say(f"Data audit: {audit_result.findings} findings (see {run_dir / 'audit.json'})")
                timings["audit_s"] = time.perf_counter() - tick
            tick = time.perf_counter()
            if plan.head_phase == "logreg":
                from ..heads.logistic import fit_logistic_head

                chosen_c = fit_logistic_head(model.head, train_views[0], C=config.strategy.logreg_c, seed=seed,
                                             balanced=weights is not None)
                say(f"Logistic regression: C = {chosen_c:g}"
                    + (" (5-fold cross-validation on train)" if config.strategy.logreg_c is None else ""))
            else:
                history += train_head(train_views, val_features)
            timings["head_s"] = time.perf_counter() - tick
            head_evaluation, head_logits = _evaluate(model, splits, "val", val_features, runtime=runtime)
            head_score = head_evaluation.accuracy

        # 3. Image phase: train the stages the strategy names (and the head) on images. Under auto,
        # only where the probe leaves room and the measured epochs fit in the budget.
        stage.name = "the image phase"
        if auto and trainable is not None and head_score is not None:
            epochs, auto_trail["finetune"] = _auto_finetune_epochs(model, trainable, splits, config, runtime=runtime,
                                                                   probe=head_score, good_enough=good_enough,
                                                                   started=started, say=say)
            if epochs == 0:  # the probe is the model: the run is, and is recorded as, a linear probe
                trainable, plan = None, get_strategy("linear-probe")
                config = config.replace(strategy=plan.name)
            else:
                config = config.replace(epochs=epochs)
            # what --resume runs: the decision as made, not made again on another measurement
            write_json_atomic(run_dir / RESUME_FILE, {"data": str(Path(data).resolve()), "config": config.to_dict()})
        probe_state = None
        if trainable is not None and initial_head is not None and val_features is not None:
            # probe-finetune: the probe waits aside; a new head learns from augmented views first, as in
            # finetune (fine-tuning from a probe that already fits the training images only drifts).
            stage.name = "the head phase before fine-tuning (a new head on augmented views)"
            probe_state = {name: value.clone() for name, value in model.head.state_dict().items()}
            base_state = {name: value.clone() for name, value in net.state_dict().items()}  # the probe's base
            model.head.load_state_dict(initial_head)
            tick = time.perf_counter()
            views = get_strategy("finetune").head_views(config.augment)
            history += train_head([features(splits.train, "train", view) for view in views], val_features)
            timings["head_s"] = timings.get("head_s", 0.0) + time.perf_counter() - tick
            stage.name = "the image phase"
        if trainable is not None:
            from .datasets import image_loader
            from .fit import fit

            model.freeze_backbone(trainable)
            say(_param_summary(model, "image phase"))
            names = set(trainable)
            backbone_params = [p for n, p in net.named_parameters() if n in names]
            groups = [{"params": list(model.head.parameters()), "lr": optim.lr}]
            if backbone_params:
                groups.append({"params": backbone_params, "lr": optim.lr * plan.backbone_lr_ratio(optim)})
            tick = time.perf_counter()
            _seed_everything(seed + 1)  # see the head phase
            # uint8 pixels: the backbone normalises whole batches (a quarter of the bytes between processes)
            augment = config.augment.to_augment() if plan.augment_images else None
            train_images = ImageDataset(splits.train, train_transform(net.data_config, augment, pixels=True))
            val_images = ImageDataset(splits.val, eval_transform(net.data_config, pixels=True))
            result = fit(
                model,
                image_loader(train_images, batch_size=runtime.batch_size, shuffle=True, workers=runtime.workers,
                             labels=[sample.label for sample in splits.train] if balanced_batches else None),
                image_loader(val_images, batch_size=runtime.batch_size * 2, shuffle=False, workers=runtime.workers),
                param_groups=groups, phase="images", epochs=optim.epochs, runtime=runtime,
                # image epochs must beat the head phase to be kept; probe-finetune weighs its best epoch
                # against the probe afterwards, image by image
                initial_score=head_score if probe_state is None else None,
                resumable=True, resume=resume is not None,  # minutes an epoch: every epoch is a resume point
                **training,
            )
            history += [EpochRow(**row) for row in result.history]
            timings["images_s"] = time.perf_counter() - tick
            val_features = None  # the backbone changed: its cached features no longer apply
            if probe_state is not None:
                from ..advise.auto import keep_probe_or_tuned

                # The best image epoch against the probe, on the same val images: the probe stays only
                # where its lead is more than noise (auto.py says why a tie goes to fine-tuning).
                labels = np.array([sample.label for sample in splits.val])
                _, tuned_logits = _evaluate(model, splits, "val", None, runtime=runtime)
                decision = keep_probe_or_tuned(head_logits.argmax(axis=1) == labels, tuned_logits.argmax(axis=1) == labels)
                if decision.keep == "probe":  # the probe's head goes back on the base it was fitted to
                    net.load_state_dict(base_state)
                    model.head.load_state_dict(probe_state)
                epoch = "" if decision.keep == "probe" or result.best_epoch is None else f" (image epoch {result.best_epoch + 1})"
                say(f"{plan.name}: {decision.reason}{epoch}.")
                auto_trail["kept"] = decision.keep
        model.eval()

        # bf16 speeds inference up only on some hardware, and must not change the answers: keep it only
        # where the model's top-1 on val agrees with fp32 at least 99% of the time.
        agreement, inference = None, runtime
        if runtime.precision == "bf16":
            agreement = _bf16_agreement(model, splits.val, val_features, cache=cache, runtime=runtime)
            if agreement < BF16_MIN_AGREEMENT:
                say(f"bf16 agrees with fp32 on only {agreement:.1%} of val predictions: evaluating and predicting in fp32.")
                inference = runtime.but(precision="32")

        # 4. Evaluate and save.
        stage.name = "the evaluation"
        val_evaluation, val_logits = _evaluate(model, splits, "val", val_features, runtime=inference)
        evaluations = {"val": val_evaluation}
        if splits.test:
            test_features = None if trainable is not None else backbone_features(
                net, splits.test, split="test", runtime=inference, cache=cache)
            evaluations["test"], _ = _evaluate(model, splits, "test", test_features, runtime=inference)
        timings["total_s"] = time.perf_counter() - started
        counts = model.param_counts()
        metrics = RunMetrics(
            evaluations=evaluations, history=history, timings=timings, bf16_agreement=agreement, logreg_c=chosen_c,
            params=ParamCounts(total=counts.total, trainable=counts.trainable, frozen=counts.frozen,
                               trained=_trained_params(model, trainable)),
        )
        record = RunRecord(
            backbone=config.strategy.backbone,
            weights=net.weights_source,
            cut=net.cut,
            data_config=net.data_config,
            classes=splits.classes,
            strategy=plan.name,
            # as run: auto's choices, the chosen C and the input size filled in, so --config replays it
            config=config.replace(img_size=net.data_config.image_size, logreg_c=chosen_c or config.strategy.logreg_c),
            advice=({**advice.to_dict(), "auto": auto_trail} if advice is not None else {})
            | ({"backbone_choice": backbone_choice.to_dict()} if backbone_choice is not None else {}) or None,
            inference_precision="auto" if inference.precision == "bf16" else "32",
            accuracy=metrics.accuracies(),
            data=DataSummary(source=str(splits.source), counts={s: len(getattr(splits, s)) for s in ("train", "val", "test")}),
            versions=library_versions(),
        )
        save_model(model, record, run_dir)
        stage.saved = True
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # the best epoch is now model.safetensors

        # 5. Report: what was learnt, where it fails (the most confident mistakes, with where the model
        # looked), and what the audit found in the data. Its cost goes into metrics.json, written last.
        stage.name, stage.saved = "the report", True
        if config.output.report:
            from ..report import confident_mistakes, write_report

            tick = time.perf_counter()
            mistakes = confident_mistakes(model, splits.val, val_logits, classes=splits.classes)
            try:
                html_path, _ = write_report(run_dir, record=record, metrics=metrics, strategy=plan, mistakes=mistakes,
                                            audit=audit_result)
                say(f"Report: {html_path} (and report.md)")
            except OSError as error:  # the model is saved and complete: a missing report must not hide that
                say(f"Warning: the report could not be written ({error.strerror or error}: {error.filename}); "
                    f"the model in {run_dir} is saved and complete.")
            timings["report_s"] = time.perf_counter() - tick
        classifier = Classifier(model, splits.classes, record)

        # 6. A run on a CPU leaves its ONNX export in graft's cache (its backbone's graph, or its
        # structure's template given the fine-tuned weights, plus the head: about a second once that
        # graph is cached), so that `graft predict RUN` needs no torch and no export the first time.
        if runtime.device.type == "cpu":
            from ..export.cached import export_after_training

            tick = time.perf_counter()
            if export_after_training(run_dir, classifier, graphs=cache.engines, say=say,
                                     frozen_backbone=plan.pretrained and not plan.image_phase,
                                     may_trace=tick - started >= EXPORT_AFTER_SECONDS) is not None:
                timings["export_s"] = time.perf_counter() - tick
        write_json_atomic(run_dir / "metrics.json", metrics.to_dict())
        return RunResult(run_dir=run_dir, classifier=classifier, record=record, metrics=metrics)


BF16_MIN_AGREEMENT = 0.99
RESUME_FILE = "run.json"  # in every run folder, from its start: the data and the config, for --resume


def resume_run(run_dir: str | Path, *, log: Callable[[str], None] | None = print, progress: bool = True) -> RunResult:
    """Go on with an interrupted run in its own folder: the same data, the same config, the same end."""
    from ..record import read_json

    run_dir = Path(run_dir)
    if not (run_dir / RESUME_FILE).exists():
        raise GraftError(f"{run_dir}: not a run folder graft can resume (no {RESUME_FILE}); give the folder "
                         "an interrupted `graft train` made, e.g. runs/finetune-20261130-101500.")
    if (run_dir / "metrics.json").exists():
        raise GraftError(f"{run_dir}: this run finished; there is nothing to resume. Use it: graft predict {run_dir} IMAGE...")
    saved = read_json(run_dir / RESUME_FILE)
    config = TrainConfig.from_dict(saved["config"], source=str(run_dir / RESUME_FILE))
    return train(saved["data"], config, log=log, progress=progress, resume=run_dir)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: what was being done, and where the run folder is."""

    def __init__(self, run_dir: Path, stage: str, saved: bool):
        super().__init__(stage)
        self.run_dir, self.stage, self.saved = run_dir, stage, saved

    def describe(self) -> str:
        if self.saved:
            return (f"Interrupted during {self.stage}: the model in {self.run_dir} is saved and complete "
                    "(only the report or metrics.json may be missing).")
        return (f"Interrupted during {self.stage}: no model was saved yet. Go on from the last completed epoch with: "
                f"graft train --resume {shlex.quote(str(self.run_dir))}")


class _Stage:
    """Names the part of the run in progress, so that Ctrl-C can say what it interrupted."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.name, self.saved = run_dir, "the set-up of the run", False

    def __enter__(self) -> _Stage:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None and issubclass(kind, KeyboardInterrupt) and not isinstance(error, RunInterrupted):
            raise RunInterrupted(self.run_dir, self.name, self.saved) from None


def _auto_finetune_epochs(model: GraftModel, trainable: list[str], splits: DataSplits, config: TrainConfig, *,
                          runtime: Runtime, probe: float, good_enough: float, started: float,
                          say: Callable[[str], None]) -> tuple[int, str]:
    """Image epochs auto runs after the probe (0: keep the probe), decided by the probe's val accuracy
    and, where there is a budget, a training step timed on a few batches (graft.advise.auto)."""
    from ..advise.auto import VAL_COST, decide_finetune, epoch_seconds
    from ..config import parse_duration
    from .budget import seconds_per_image
    from .datasets import image_loader

    budget = parse_duration(config.strategy.budget)
    seconds_spent = time.perf_counter() - started
    seconds_left = None if budget is None else budget - seconds_spent
    estimate = None
    if probe < good_enough and seconds_left is not None:
        net = model.backbone
        model.freeze_backbone(trainable)
        augment = config.augment.to_augment()
        sample = ImageDataset(splits.train, train_transform(net.data_config, augment, pixels=True))
        loader = image_loader(sample, batch_size=runtime.batch_size, shuffle=True, workers=runtime.workers)
        per_image = seconds_per_image(model, loader, runtime=runtime)
        model.freeze_backbone()
        estimate = epoch_seconds(per_image, train_images=len(splits.train), val_images=len(splits.val))
        # keep time for the evaluation after the last epoch (val and test, forward passes)
        seconds_left -= per_image * VAL_COST * (len(splits.val) + len(splits.test))
    decision = decide_finetune(probe_accuracy=probe, epochs=config.optim.epochs, epoch_seconds=estimate,
                               seconds_left=seconds_left, seconds_spent=seconds_spent, good_enough=good_enough)
    say(f"auto: {decision.reason}")
    return decision.epochs, decision.reason


def _seed_everything(seed: int) -> None:
    """What Lightning's seed_everything(seed, workers=True) does, without importing Lightning (1.3 s)
    on runs that never train with it: Python, numpy and torch (CPU and CUDA) seeded, and the
    variables that make Lightning seed its DataLoader workers when an image phase runs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PL_GLOBAL_SEED"] = str(seed)
    os.environ["PL_SEED_WORKERS"] = "1"


def _build_model(config: TrainConfig, plan: Strategy, *, classes: int):
    """The backbone the strategy asks for (pretrained or not, cut or whole) and a new head on it."""
    from ..backbones import create_backbone
    from ..heads import HeadConfig, create_head

    options = config.strategy
    net = create_backbone(options.backbone, weights=options.weights if plan.pretrained else "none",
                          cut=plan.cut(options), img_size=config.data.img_size)
    head = create_head(net.num_features, classes, HeadConfig(hidden=options.hidden, dropout=options.dropout))
    # Pretrained BatchNorm statistics stay as they are unless asked (random weights must learn theirs).
    return net, GraftModel(net, head, bn_stats_frozen=plan.pretrained and not options.train_bn_stats)


def _bf16_agreement(model: GraftModel, samples, bf16_features: FeatureSet | None, *, cache: FeatureCache,
                    runtime: Runtime) -> float:
    """Fraction of samples whose top-1 class is the same in bf16 autocast as in fp32.

    With the backbone still frozen (`bf16_features`: its cached bf16 features of `samples`), the fp32
    features go into the cache too, so only the first run on this data pays for the fp32 pass.
    """
    fp32_runtime = runtime.but(precision="32")
    if bf16_features is not None:
        fp32_features = backbone_features(model.backbone, samples, split="val", cache=cache, runtime=fp32_runtime)
        fp32 = _head_logits(model, fp32_features, runtime=fp32_runtime)
        bf16 = _head_logits(model, bf16_features, runtime=runtime)  # the head as bf16 inference runs it
    else:
        config = model.backbone.data_config
        batch = runtime.batch_size * 2
        fp32 = predict_logits(model, samples, config, runtime=fp32_runtime.but(batch_size=batch))
        bf16 = predict_logits(model, samples, config, runtime=runtime.but(batch_size=batch))
    return float((fp32.argmax(axis=1) == bf16.argmax(axis=1)).mean())


def _evaluate(model, splits: DataSplits, split: str, features: FeatureSet | None, *,
              runtime: Runtime) -> tuple[Evaluation, np.ndarray]:
    """Evaluate on a split, and its logits; with a frozen backbone its cached plain-view `features`
    give the same logits as the whole model."""
    samples = getattr(splits, split)
    if features is not None:
        logits = _head_logits(model, features, runtime=runtime.but(precision="32"))
    else:
        logits = predict_logits(model, samples, model.backbone.data_config,
                                runtime=runtime.but(batch_size=runtime.batch_size * 2))
    return evaluate_predictions([s.label for s in samples], logits.argmax(axis=1), splits.classes), logits


def _head_logits(model: GraftModel, features: FeatureSet, *, runtime: Runtime) -> np.ndarray:
    """The head's logits on cached features: what the whole model gives while the backbone is frozen."""
    with torch.inference_mode(), runtime.autocast(torch.device("cpu")):
        return model.head(torch.from_numpy(np.asarray(features.features, dtype=np.float32))).float().numpy()


def _audit_data(splits: DataSplits, features: Callable[..., FeatureSet], *, plain_train: FeatureSet | None,
                val_features: FeatureSet, seed: int, run_dir: Path):
    """Audit the data from the frozen backbone's plain-view features (cached: the test features are
    the ones the evaluation reads later) and write audit.json. `plain_train`: those already at hand."""
    from ..audit import audit_features

    if plain_train is None:
        plain_train = features(splits.train, "train")
    by_split = {"train": plain_train, "val": val_features}
    if splits.test:
        by_split["test"] = features(splits.test, "test")
    result = audit_features(splits, by_split, seed=seed)
    write_json_atomic(run_dir / "audit.json", result.to_dict())
    return result


def _param_summary(model: GraftModel, phase: str) -> str:
    counts = model.param_counts()
    backbone, head = model.param_counts(model.backbone), model.param_counts(model.head)
    return (
        f"Parameters ({phase}): total {counts.total:,} | trainable {counts.trainable:,} | "
        f"non-trainable {counts.frozen:,}  [backbone {backbone.trainable:,}/{backbone.total:,} trainable, "
        f"head {head.trainable:,}]"
    )


def _trained_params(model: GraftModel, trainable: list[str] | None) -> int:
    """The head's parameters, plus the backbone's that the image phase trained."""
    head = model.param_counts(model.head).total
    if trainable is None:
        return head
    params = dict(model.backbone.named_parameters())
    return head + sum(params[n].numel() for n in trainable)
