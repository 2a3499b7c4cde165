"""graft.train: from a folder of labelled images to a trained, evaluated, saved classifier.

Read top to bottom, this is the whole procedure:
1. find and check the data; build the backbone the strategy asks for, and a new head;
2. head phase (frozen backbone): features once per image and view, from the cache when possible;
   the data audit reads the plain-view ones; then the head trains on them (logistic regression,
   or AdamW over augmented views);
3. image phase (strategies that train the base): the chosen stages train on images, at a fraction
   of the head's learning rate, starting from the head the head phase produced;
4. evaluate on val (and test), save model.safetensors + graft.json in the run folder;
5. report: report.html and report.md (curves, confusion matrices, per-class metrics, the most
   confident mistakes with their activation maps, the audit), then metrics.json with every timing.
"""

from __future__ import annotations

import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import lightning as L
import numpy as np
import torch

from ..backbones import DEFAULT_BACKBONE, create_backbone
from ..classifier import Classifier, predict_logits
from ..data.dataset import ImageDataset
from ..data.discover import DataSplits, find_data, write_skipped_report
from ..data.transforms import Augment, train_transform, eval_transform
from ..errors import GraftError
from ..evaluation import Evaluation, evaluate_predictions
from ..export import save_model, write_json_atomic
from ..features import FeatureCache, FeatureSet, backbone_features
from ..features.extract import autocast_context
from ..heads import HeadConfig, create_head
from ..heads.logistic import fit_logistic_head
from ..model import GraftModel
from ..report import confident_mistakes, write_report
from ..runtime import default_workers, resolve_precision
from ..strategies import Strategy, StrategyOptions, get_strategy
from .datasets import FeatureViews, feature_loader, image_loader
from .callbacks import EpochSetter
from .fit import fit


AUTO = "auto"  # --strategy auto: measure the data, then follow graft.advise's recommendation


@dataclass
class RunResult:
    run_dir: Path
    classifier: Classifier
    metrics: dict
    history: list[dict] = field(default_factory=list)

    @property
    def val(self) -> Evaluation:
        return self.metrics["val_evaluation"]


def train(
    data: str | Path,
    *,
    backbone: str = DEFAULT_BACKBONE,
    weights: str = "imagenet",
    strategy: str = "finetune",
    epochs: int = 5,
    head_epochs: int = 15,
    lr: float = 1e-3,
    backbone_lr_ratio: float = 0.1,
    batch_size: int = 32,
    img_size: int | None = None,
    unfreeze: int = 2,
    cut: int = -2,
    views: int = 3,
    augment: Augment | None = Augment(),
    hidden: int | None = None,
    dropout: float = 0.0,
    train_bn_stats: bool = False,
    logreg_c: float | None = None,
    label_smoothing: float = 0.1,
    weight_decay: float = 1e-4,
    patience: int = 5,
    val_split: float = 0.2,
    seed: int = 0,
    precision: str = "auto",
    workers: int | None = None,
    devices: int | str = 1,
    num_nodes: int = 1,
    out: str | Path = "runs",
    name: str | None = None,
    cache_dir: str | Path | None = None,
    report: bool = True,
    audit: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> RunResult:
    """Train a classifier on `data` by transfer learning; see `graft train --help` for each option.

    `epochs` counts image-phase epochs (finetune, partial, scratch); `head_epochs` counts epochs of
    the head on cached features (every strategy but scratch). `backbone_lr_ratio` scales `lr` for
    the pretrained layers, so they change slowly while the new head learns fast. Fine-tuning keeps
    the pretrained BatchNorm statistics unless `train_bn_stats` (their scale and shift still train). `report` writes
    report.html/report.md in the run folder; `audit` audits the data with the frozen pretrained
    backbone's features (every strategy but scratch) for the report and audit.json.
    """
    say = log or (lambda message: None)
    _check_numbers(epochs=epochs, head_epochs=head_epochs, lr=lr, backbone_lr_ratio=backbone_lr_ratio,
                   batch_size=batch_size, views=views, patience=patience, logreg_c=logreg_c)
    started = time.perf_counter()
    if strategy != AUTO:
        get_strategy(strategy)  # an unknown name fails now, before any data is read
    head_config = HeadConfig(hidden=hidden, dropout=dropout)
    precision = resolve_precision(precision)
    workers = default_workers() if workers is None else workers
    L.seed_everything(seed, workers=True, verbose=False)

    # 1. Data, then the strategy (measured from the data with "auto"), backbone and head.
    splits = find_data(data, val_split=val_split, seed=seed)
    say(splits.describe())
    advice = None
    if strategy == AUTO:
        from ..advise import advise_splits

        advice = advise_splits(splits, backbone=backbone, weights=weights, img_size=img_size, seed=seed,
                               workers=workers, precision=precision, progress=progress)
        say(advice.describe())
        strategy, lr, backbone_lr_ratio = advice.strategy, advice.lr, advice.backbone_lr_ratio
        unfreeze = unfreeze if advice.unfreeze is None else advice.unfreeze
        cut = cut if advice.cut is None else advice.cut
    plan = get_strategy(strategy)
    options = StrategyOptions(unfreeze=unfreeze, cut=cut)
    if plan.head_phase == "logreg" and not head_config.is_linear:
        raise GraftError("linear-probe fits a logistic regression, a linear head: leave out --hidden.")
    net = create_backbone(
        backbone,
        weights=weights if plan.pretrained else "none",
        cut=plan.cut(options),
        img_size=img_size,
    )
    # Pretrained BatchNorm statistics stay as they are unless asked (random weights must learn theirs).
    model = GraftModel(net, create_head(net.num_features, len(splits.classes), head_config),
                       bn_stats_frozen=plan.pretrained and not train_bn_stats)
    run_dir = new_run_dir(out, name or f"{strategy}-{time.strftime('%Y%m%d-%H%M%S')}")
    if splits.skipped:
        write_skipped_report(splits.skipped, run_dir / "skipped.json")
        say(f"Skipped {len(splits.skipped)} unreadable or non-image files: see {run_dir / 'skipped.json'}")
    say(f"Backbone {backbone} ({net.weights_source}), input {net.data_config.image_size} px, "
        f"strategy {strategy}: {plan.summary}")

    history: list[dict] = []
    timings: dict[str, float] = {}
    cache = FeatureCache(Path(cache_dir) / "features" if cache_dir else None)
    common = dict(precision=precision, progress=progress, weight_decay=weight_decay, label_smoothing=label_smoothing)

    # 2. Head phase: the backbone is frozen, so it runs once per image (and view), into the cache.
    val_features, head_score, chosen_c, audit_result = None, None, None, None
    if plan.head_phase is not None:
        model.freeze_backbone()
        say(_param_summary(model, "head phase"))
        tick = time.perf_counter()
        processes = devices if isinstance(devices, int) and num_nodes == 1 else 1  # extraction sharded like training
        extract = dict(cache=cache, batch_size=batch_size, workers=workers, precision=precision,
                       progress=progress, processes=processes)
        # One plain view for a logistic regression (or without augmentation), else `views` augmented ones.
        view_numbers = [None] if plan.head_phase == "logreg" or augment is None else list(range(views))
        train_views = [backbone_features(net, splits.train, split="train", view=v, augment=augment, seed=seed, **extract)
                       for v in view_numbers]
        val_features = backbone_features(net, splits.val, split="val", **extract)
        timings["features_s"] = time.perf_counter() - tick
        if audit:  # now, while the backbone is pretrained and frozen: its plain-view features are the audit's
            tick = time.perf_counter()
            plain_train = train_views[0] if view_numbers == [None] else None
            audit_result = _audit_data(net, splits, plain_train, val_features, extract=extract, seed=seed, run_dir=run_dir)
            say(f"Data audit: {audit_result.findings} findings (see {run_dir / 'audit.json'})")
            timings["audit_s"] = time.perf_counter() - tick
        tick = time.perf_counter()
        if plan.head_phase == "logreg":
            chosen_c = fit_logistic_head(model.head, train_views[0], C=logreg_c, seed=seed)
            say(f"Logistic regression: C = {chosen_c:g}" + (" (5-fold cross-validation on train)" if logreg_c is None else ""))
        else:
            train_set = FeatureViews(train_views)
            result = fit(
                model.head,
                feature_loader(train_set, batch_size=batch_size, shuffle=True, seed=seed),
                feature_loader(FeatureViews([val_features]), batch_size=256, shuffle=False),
                param_groups=[{"params": list(model.head.parameters()), "lr": lr}],
                phase="head", run_dir=run_dir, epochs=head_epochs, patience=patience,
                extra_callbacks=[EpochSetter(train_set)], **common,  # milliseconds an epoch: one process
            )
            history += result.history
        timings["head_s"] = time.perf_counter() - tick
        head_evaluation, _ = _evaluate(model, splits, "val", val_features, cache=cache, batch_size=batch_size,
                                       workers=workers, precision=precision, progress=progress)
        head_score = head_evaluation.accuracy

    # 3. Image phase: train the stages the strategy names (and the head) on images.
    trainable = plan.trainable(net, options)
    if trainable is not None:
        model.freeze_backbone(trainable)
        say(_param_summary(model, "image phase"))
        trainable_set = set(trainable)
        backbone_params = [p for n, p in net.named_parameters() if n in trainable_set]
        ratio = backbone_lr_ratio if plan.pretrained else 1.0  # random weights need the full rate
        groups = [{"params": list(model.head.parameters()), "lr": lr}]
        if backbone_params:
            groups.append({"params": backbone_params, "lr": lr * ratio})
        tick = time.perf_counter()
        # uint8 pixels: the backbone normalises whole batches (a quarter of the bytes between processes)
        train_images = ImageDataset(splits.train,
                                    train_transform(net.data_config, augment if plan.augment else None, pixels=True))
        val_images = ImageDataset(splits.val, eval_transform(net.data_config, pixels=True))
        result = fit(
            model,
            image_loader(train_images, batch_size=batch_size, shuffle=True, workers=workers),
            image_loader(val_images, batch_size=batch_size * 2, shuffle=False, workers=workers),
            param_groups=groups, phase="images", run_dir=run_dir, epochs=epochs, patience=patience,
            initial_score=head_score, devices=devices, num_nodes=num_nodes,
            **common,  # image epochs must beat the head phase to be kept
        )
        history += result.history
        timings["images_s"] = time.perf_counter() - tick
        val_features = None  # the backbone changed: its cached features no longer apply
    model.eval()

    # bf16 speeds inference up only on some hardware, and must not change the answers: keep it only
    # where the model's top-1 on val agrees with fp32 at least 99% of the time.
    agreement, inference = None, precision
    if precision == "bf16":
        agreement = _bf16_agreement(model, splits.val, val_features, cache=cache, batch_size=batch_size,
                                    workers=workers, progress=progress)
        if agreement < BF16_MIN_AGREEMENT:
            say(f"bf16 agrees with fp32 on only {agreement:.1%} of val predictions: evaluating and predicting in fp32.")
            inference = "32"

    # 4. Evaluate and save.
    val_evaluation, val_logits = _evaluate(model, splits, "val", val_features, cache=cache, batch_size=batch_size,
                                           workers=workers, precision=inference, progress=progress)
    evaluations = {"val": val_evaluation}
    if splits.test:
        evaluations["test"], _ = _evaluate(model, splits, "test", None if trainable is not None else "cache",
                                           cache=cache, batch_size=batch_size, workers=workers,
                                           precision=inference, progress=progress)
    timings["total_s"] = time.perf_counter() - started
    hyper = dict(epochs=epochs, head_epochs=head_epochs, lr=lr, backbone_lr_ratio=backbone_lr_ratio,
                 batch_size=batch_size, img_size=net.data_config.image_size, unfreeze=unfreeze, cut=cut,
                 views=views, augment=augment.to_dict() if augment else None, logreg_c=chosen_c or logreg_c,
                 label_smoothing=label_smoothing, weight_decay=weight_decay, patience=patience, train_bn_stats=train_bn_stats,
                 val_split=val_split, seed=seed, precision=precision)
    metrics = {
        **{f"{split}_accuracy": e.accuracy for split, e in evaluations.items()},
        **{split: e.to_dict() for split, e in evaluations.items()},
        "timings": timings,
        "history": history,
        "params": model.param_counts().__dict__ | {"trainable_in_training": _trained_params(model, plan, trainable)},
        "bf16_agreement": agreement,
        "logreg_c": chosen_c,
    }
    meta = {
        "backbone": backbone,
        "weights": net.weights_source,
        "cut": net.cut,
        "data_config": net.data_config.to_dict(),
        "head": head_config.to_dict(),
        "classes": splits.classes,
        "strategy": strategy,
        "advice": advice.to_dict() if advice is not None else None,  # why --strategy auto chose this
        "inference_precision": "auto" if inference == "bf16" else "32",
        "hyperparameters": hyper,
        "metrics": {k: v for k, v in metrics.items() if k.endswith("_accuracy")},
        "data": {"source": splits.source, "counts": {s: len(getattr(splits, s)) for s in ("train", "val", "test")}},
        "versions": _versions(),
    }
    save_model(model, meta, run_dir)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # the best epoch is now model.safetensors

    # 5. Report: what was learnt, where it fails (the most confident mistakes, with where the model
    # looked), and what the audit found in the data. Its cost goes into metrics.json, written last.
    if report:
        tick = time.perf_counter()
        mistakes = confident_mistakes(model, splits.val, val_logits, classes=splits.classes)
        html_path, _ = write_report(run_dir, meta=meta, metrics=metrics, mistakes=mistakes, audit=audit_result)
        timings["report_s"] = time.perf_counter() - tick
        say(f"Report: {html_path} (and report.md)")
    write_json_atomic(run_dir / "metrics.json", metrics)
    classifier = Classifier(model, splits.classes, meta)
    return RunResult(run_dir=run_dir, classifier=classifier, metrics={**metrics, "val_evaluation": evaluations["val"]}, history=history)


BF16_MIN_AGREEMENT = 0.99


def _bf16_agreement(model: GraftModel, samples, bf16_features: FeatureSet | None, *, cache: FeatureCache,
                    batch_size: int, workers: int, progress: bool) -> float:
    """Fraction of samples whose top-1 class is the same in bf16 autocast as in fp32.

    With the backbone still frozen (`bf16_features`: its cached bf16 features of `samples`), the fp32
    features go into the cache too, so only the first run on this data pays for the fp32 pass.
    """
    if bf16_features is not None:
        fp32_features = backbone_features(model.backbone, samples, split="val", cache=cache, batch_size=batch_size,
                                          workers=workers, precision="32", progress=progress)
        fp32 = _head_logits(model, fp32_features, precision="32")
        bf16 = _head_logits(model, bf16_features, precision="bf16")  # the head as bf16 inference runs it
    else:
        config = model.backbone.data_config
        fp32 = predict_logits(model, samples, config, batch_size=batch_size * 2, workers=workers, precision="32")
        bf16 = predict_logits(model, samples, config, batch_size=batch_size * 2, workers=workers, precision="bf16")
    return float((fp32.argmax(axis=1) == bf16.argmax(axis=1)).mean())


def _evaluate(model, splits: DataSplits, split: str, features, *, cache, batch_size, workers, precision,
              progress) -> tuple[Evaluation, np.ndarray]:
    """Evaluate on a split, and its logits; with a frozen backbone the cached plain-view features give
    the same logits."""
    samples = getattr(splits, split)
    labels = [s.label for s in samples]
    if features == "cache":
        features = backbone_features(model.backbone, samples, split=split, cache=cache, batch_size=batch_size,
                                     workers=workers, precision=precision, progress=progress)
    if isinstance(features, FeatureSet):
        logits = _head_logits(model, features, precision="32")
    else:
        logits = predict_logits(model, samples, model.backbone.data_config, batch_size=batch_size * 2,
                                workers=workers, precision=precision)
    return evaluate_predictions(labels, logits.argmax(axis=1), splits.classes), logits


def _head_logits(model: GraftModel, features: FeatureSet, *, precision: str) -> np.ndarray:
    """The head's logits on cached features: what the whole model gives while the backbone is frozen."""
    with torch.inference_mode(), autocast_context(precision, torch.device("cpu")):
        return model.head(torch.from_numpy(np.asarray(features.features, dtype=np.float32))).float().numpy()


def _audit_data(net, splits: DataSplits, plain_train: FeatureSet | None, val_features: FeatureSet, *, extract: dict,
                seed: int, run_dir: Path):
    """Audit the data from the frozen backbone's plain-view features (cached: the test features are
    the ones the evaluation reads later) and write audit.json. `plain_train`: those already at hand."""
    from ..audit import audit_features

    if plain_train is None:
        plain_train = backbone_features(net, splits.train, split="train", **extract)
    features = {"train": plain_train, "val": val_features}
    if splits.test:
        features["test"] = backbone_features(net, splits.test, split="test", **extract)
    result = audit_features(splits, features, seed=seed)
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


def _trained_params(model: GraftModel, plan: Strategy, trainable: list[str] | None) -> int:
    head = model.param_counts(model.head).total
    if trainable is None:
        return head
    params = dict(model.backbone.named_parameters())
    return head + sum(params[n].numel() for n in trainable)


def new_run_dir(out: str | Path, name: str) -> Path:
    base = Path(out) / name
    run_dir, index = base, 2
    while run_dir.exists() and any(run_dir.iterdir()):
        run_dir, index = base.with_name(f"{base.name}-{index}"), index + 1
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _check_numbers(**values) -> None:
    for key, value in values.items():
        if value is not None and value <= 0:  # None: an optional value left for graft to choose
            raise GraftError(f"--{key.replace('_', '-')} {value}: must be greater than 0.")


def _versions() -> dict:
    packages = {}
    for package in ("graft", "torch", "torchvision", "timm", "lightning", "scikit-learn", "safetensors"):
        try:
            packages[package] = version(package)
        except Exception:  # noqa: BLE001 - a missing distribution just isn't recorded
            continue
    return packages | {"python": platform.python_version()}
