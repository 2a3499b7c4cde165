"""Step 1 of a run: the data, the strategy (measured from the data under auto), the network, the run folder."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import AUTO, TrainConfig
from ..data.discover import DataSplits, find_data, write_skipped_report
from ..errors import GraftError
from ..features import FeatureCache
from ..io import check_output_folder, new_run_dir
from ..runtime import Runtime
from ..strategies import Strategy, get_strategy
from .resume import check_same_data, read_resume_file, write_resume_file
from .run import Run, seed_everything


def start(data: str | Path, config: TrainConfig, *, log: Callable[[str], None], progress: bool,
          resume: Path | None) -> Run:
    """Check and split the data; settle the backbone and the strategy (auto measures the data first);
    build the backbone the strategy asks for and a new head; make the run folder (or reopen `resume`)."""
    started, requested = time.perf_counter(), config
    if config.strategy.strategy != AUTO:  # a bad name or combination fails now, before any data is read
        get_strategy(config.strategy.strategy).check(config)
    runtime = config.runtime.resolve(progress=progress)
    check_output_folder(config.output.out)
    saved = read_resume_file(resume) if resume is not None else {"decisions": {}, "found": None}
    seed_everything(config.data.seed)
    splits = find_data(data, val_split=config.data.val_split, seed=config.data.seed, task=config.data.task)
    if resume is not None:
        check_same_data(resume, saved["found"], splits)
    if splits.task != "multilabel" and config.data.threshold is not None:
        raise GraftError(f"--threshold {config.data.threshold:g} is the decision threshold of multi-label data, and "
                         f"{data} has one label per image: leave out --threshold (each image gets its most likely "
                         "class; --known-recall sets the threshold of unknown images), or give a label file with "
                         "several labels per image, or --task multilabel.")
    log(splits.describe())
    cache = FeatureCache()  # under --cache-dir (graft.runtime.use_cache_dir, around the run), or graft's cache
    weights = _class_weights(splits, config)
    decisions: dict[str, Any] = dict(saved["decisions"])
    notes: dict[str, Any] = {}
    config = _settle_backbone(config, splits, runtime, cache, weights, decisions, notes, log)
    auto = config.strategy.strategy == AUTO
    config, good_enough, trail = _settle_strategy(config, splits, runtime, notes, log) if auto else (config, 1.0, {})
    plan = get_strategy(config.strategy.strategy)
    plan.check(config)
    seed_everything(config.data.seed)  # the new head starts the same whatever auto measured before it
    net, model = build_model(config, plan, classes=len(splits.classes))
    trainable = plan.trainable(net, config.strategy) if plan.image_phase else None  # a bad --unfreeze fails here
    source = str(Path(data).resolve())
    if resume is None:
        name = config.output.name or f"{AUTO if auto else plan.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_dir = new_run_dir(config.output.out, name)
        write_resume_file(run_dir, data=source, config=requested, decisions=decisions, splits=splits)
    else:
        run_dir = Path(resume)
        log(f"Resuming {run_dir}: cached features and the last completed epoch are reused.")
    if splits.skipped:
        write_skipped_report(splits.skipped, run_dir / "skipped.json")
        log(f"Skipped {len(splits.skipped)} unreadable or non-image files: see {run_dir / 'skipped.json'}")
    log(f"Backbone {config.strategy.backbone} ({net.weights_source}), input {net.data_config.image_size} px, "
        f"strategy {plan.name}: {plan.summary}")
    if weights is not None:
        log(_class_weights_sentence(config))
    if config.optim.sampler == "balanced":
        log("Batches: balanced (--sampler balanced): each class is drawn equally often; the loss is unweighted.")
    return Run(data=source, config=config, runtime=runtime, splits=splits, cache=cache, run_dir=run_dir, plan=plan,
               net=net, model=model, log=log, started=started, resume=resume is not None, auto=auto,
               good_enough=good_enough, class_weights=weights, trainable=trainable, trail=trail, notes=notes,
               requested=requested, decisions=decisions,
               initial_head={name: value.clone() for name, value in model.head.state_dict().items()})


def _class_weights(splits: DataSplits, config: TrainConfig) -> list[float] | None:
    """Single-label data: graft.audit.checks.class_weights (--class-weight). Several labels per image:
    each class's positive weight in its binary loss, negatives / positives on train, under
    --class-weight balanced (auto leaves them unweighted: one image's labels are not a class count)."""
    from ..audit.checks import class_weights  # scikit-learn: imported when a run starts, not with graft

    if splits.task != "multilabel":
        return class_weights(splits, config.optim.class_weight)
    if config.optim.sampler == "balanced":
        raise GraftError("--sampler balanced draws each class equally often, which several labels per image do not "
                         "allow; use --class-weight balanced (each class's positives weighted) instead.")
    if config.optim.class_weight != "balanced":
        return None
    positives = splits.targets(splits.train).sum(axis=0)
    return [float((len(splits.train) - count) / max(count, 1.0)) for count in positives]


def build_model(config: TrainConfig, plan: Strategy, *, classes: int):
    """The backbone the strategy asks for (pretrained or not, cut or whole) and a new head on it."""
    from ..backbones import create_backbone
    from ..heads import HeadConfig, create_head
    from ..model import GraftModel

    options = config.strategy
    net = create_backbone(options.backbone, weights=options.weights if plan.pretrained else "none",
                          cut=plan.cut(options), img_size=config.data.img_size)
    head = create_head(net.num_features, classes, HeadConfig(hidden=options.hidden, dropout=options.dropout))
    # Pretrained BatchNorm statistics stay as they are unless asked (random weights must learn theirs).
    return net, GraftModel(net, head, bn_stats_frozen=plan.pretrained and not options.train_bn_stats)


def _settle_backbone(config: TrainConfig, splits: DataSplits, runtime: Runtime, cache: FeatureCache,
                     weights: list[float] | None, decisions: dict, notes: dict, log) -> TrainConfig:
    """--backbone auto: the offline backbone whose features probe best (graft.advise.backbone), chosen
    once per run: a resumed run takes the choice it made."""
    if config.strategy.backbone != AUTO:
        return config
    if "backbone_choice" not in decisions:
        from ..advise.backbone import choose_backbone

        choice = choose_backbone(splits.train, img_size=config.data.img_size, seed=config.data.seed, runtime=runtime,
                                 cache=cache, balanced=weights is not None, budget=config.strategy.budget,
                                 weights=config.strategy.weights, say=log)
        log(choice.describe())
        decisions["backbone_choice"] = choice.to_dict()
    notes["backbone_choice"] = decisions["backbone_choice"]
    return config.replace(backbone=decisions["backbone_choice"]["backbone"])


def _settle_strategy(config: TrainConfig, splits: DataSplits, runtime: Runtime, notes: dict,
                     log) -> tuple[TrainConfig, float, dict]:
    """--strategy auto: measure the data as `graft advise` does and take auto's plan (graft.advise.auto):
    the config it sets, the probe accuracy from which fine-tuning is not tried, and its reasons."""
    from ..advise import advise_splits
    from ..advise.auto import auto_plan, multilabel_plan

    if splits.task == "multilabel":  # graft advise's measurements are single-label probes
        chosen = multilabel_plan(list(splits.counts("train").values()), budget=config.strategy.budget)
        log(chosen.describe())
        return config.replace(**chosen.options), chosen.good_enough, {"strategy": chosen.strategy, "reasons": chosen.reasons}
    advice = advise_splits(splits, backbone=config.strategy.backbone, weights=config.strategy.weights,
                           img_size=config.data.img_size, seed=config.data.seed, runtime=runtime)
    chosen = auto_plan(advice, budget=config.strategy.budget)
    log(f"{advice.headline()}\n{chosen.describe()}")
    notes["advice"] = advice.to_dict()
    return config.replace(**chosen.options), chosen.good_enough, {"strategy": chosen.strategy, "reasons": chosen.reasons}


def _class_weights_sentence(config: TrainConfig) -> str:
    optim = config.optim
    why = ("--class-weight balanced" if optim.class_weight == "balanced" else
           "some classes have far fewer training images; --class-weight none to turn this off")
    where = (", in the logistic fit; the batches are balanced instead of the loss." if optim.sampler == "balanced"
             else ".")
    return f"Class weights: balanced ({why}){where}"
