"""The `graft` command: a thin layer over the Python API (graft.train, graft.load, ...)."""

from __future__ import annotations

import json
import sys
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import GraftError
from .options import Backbone, ImgSize, Precision, Strategy, ValSplit, Weights, Workers
from .render import console, error_console, evaluation_tables, history_table, results_table

app = typer.Typer(
    help="Transfer learning for image classification: a folder of labelled photos in, a trained classifier out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
cache_app = typer.Typer(help="Show or clear the cache of backbone features.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")

# Commands that live beside their own library folder: graft.explain, graft.audit, graft.advise, graft.compare.
from . import advise as _advise, audit as _audit, compare as _compare, explain as _explain  # noqa: E402

for _module in (_compare, _advise, _explain, _audit):
    _module.register(app)

DEMO_DATA = "demo_data/cifar10-sample"


def main() -> None:
    """Entry point: user errors become one clear message and exit code 2, never a traceback."""
    try:
        app()
    except GraftError as error:
        error_console.print(f"[bold red]error:[/] {escape(str(error))}")
        sys.exit(2)
    except KeyboardInterrupt:
        error_console.print("[yellow]interrupted[/]: no partial model was saved.")
        sys.exit(130)


def _train_and_report(data, *, json_out: bool = False, **options) -> None:
    from ..training.pipeline import train

    log = None if json_out else (lambda text: console.print(escape(text)))  # names may hold [brackets]
    result = train(data, log=log, **options)
    if json_out:
        print(json.dumps({k: v for k, v in result.metrics.items() if k != "val_evaluation"}, indent=2, default=str))
        return
    if result.history:
        console.print(history_table(result.history))
    for split in ("val", "test"):
        if split in result.metrics:
            from ..evaluation import Evaluation

            tables = evaluation_tables(Evaluation(**{k: v for k, v in result.metrics[split].items() if k != "macro_f1"}), split)
            for table in tables:
                console.print(table)
    console.print(results_table(result.metrics, result.classifier.meta["strategy"], options["backbone"]))
    console.print(f"Saved model and logs in [bold]{result.run_dir}[/] (model.safetensors, graft.json, metrics.json, logs/).")
    if (result.run_dir / "report.html").exists():
        console.print(f"Report: [bold]{result.run_dir / 'report.html'}[/] (and report.md)")
    console.print(f"Next: graft predict {result.run_dir} IMAGE...   |   graft evaluate {result.run_dir} DATA")




@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Folder with train/ and val/ (and optional test/) class folders, a folder of class folders, or a CSV of path,label.")],
    strategy: Strategy = "finetune",
    backbone: Backbone = "tf_efficientnet_lite0",
    weights: Weights = "imagenet",
    epochs: Annotated[int, typer.Option(help="Epochs on images (finetune, partial, scratch).")] = 5,
    head_epochs: Annotated[int, typer.Option(help="Epochs of the new head on cached features.")] = 15,
    lr: Annotated[float, typer.Option(help="Learning rate of the head.")] = 1e-3,
    backbone_lr_ratio: Annotated[float, typer.Option(help="Backbone learning rate as a fraction of --lr.")] = 0.1,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 32,
    img_size: ImgSize = None,
    unfreeze: Annotated[int, typer.Option(help="partial: how many of the last stages to train.")] = 2,
    cut: Annotated[int, typer.Option(help="truncate: keep stages 0..K (negative counts from the end).")] = -2,
    views: Annotated[int, typer.Option(help="Augmented views per image cached for the head phase.")] = 3,
    augment: Annotated[bool, typer.Option(help="Augment training images (random resized crop, flip, jitter).")] = True,
    crop_scale: Annotated[float, typer.Option(help="Smallest area fraction the random crop keeps.")] = 0.35,
    hflip: Annotated[float, typer.Option(help="Probability of a horizontal flip.")] = 0.5,
    color_jitter: Annotated[float, typer.Option(help="Brightness/contrast/saturation jitter (0: none).")] = 0.0,
    hidden: Annotated[Optional[int], typer.Option(help="Units of a hidden layer in the head (default: linear head).")] = None,
    dropout: Annotated[float, typer.Option(help="Dropout in the head.")] = 0.0,
    train_bn_stats: Annotated[bool, typer.Option(help="Fine-tuning: update the pretrained BatchNorm statistics (default: keep them).")] = False,
    logreg_c: Annotated[Optional[float], typer.Option(help="linear-probe: regularisation C (default: chosen by 5-fold cross-validation).")] = None,
    patience: Annotated[int, typer.Option(help="Early stopping: epochs without improvement.")] = 5,
    val_split: ValSplit = 0.2,
    seed: Annotated[int, typer.Option(help="Random seed (splits, initialisation, augmentation).")] = 0,
    precision: Precision = "auto",
    workers: Workers = None,
    devices: Annotated[str, typer.Option(help="Devices (or processes on CPU) for Lightning.")] = "1",
    num_nodes: Annotated[int, typer.Option(help="Machines for distributed training.")] = 1,
    out: Annotated[Path, typer.Option(help="Folder for run folders.")] = Path("runs"),
    name: Annotated[Optional[str], typer.Option(help="Run folder name (default: strategy-date-time).")] = None,
    report: Annotated[bool, typer.Option(help="Write report.html and report.md in the run folder (curves, confusion matrices, mistakes with activation maps, audit).")] = True,
    audit: Annotated[bool, typer.Option(help="Audit the data (duplicates, imbalance, likely mislabelled images) with the pretrained backbone's features, for the report and audit.json.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Train a classifier on DATA by transfer learning and save it in a run folder."""
    from ..data.transforms import Augment

    _train_and_report(
        data, json_out=json_out, strategy=strategy, backbone=backbone, weights=weights, epochs=epochs,
        head_epochs=head_epochs, lr=lr, backbone_lr_ratio=backbone_lr_ratio, batch_size=batch_size,
        img_size=img_size, unfreeze=unfreeze, cut=cut, views=views,
        augment=Augment(scale=(crop_scale, 1.0), hflip=hflip, color_jitter=color_jitter) if augment else None,
        hidden=hidden, dropout=dropout, train_bn_stats=train_bn_stats, logreg_c=logreg_c, patience=patience, val_split=val_split, seed=seed,
        precision=precision, workers=workers, devices=int(devices) if devices.isdigit() else devices,
        num_nodes=num_nodes, out=out, name=name, report=report, audit=audit, progress=not json_out,
    )


@app.command()
def demo(
    strategy: Strategy = "linear-probe",
    img_size: Annotated[Optional[int], typer.Option(help="Input size in pixels (default: the backbone's 224).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for run folders.")] = Path("runs"),
) -> None:
    """Train on the embedded CIFAR-10 sample (10 classes, 2,500 images), offline, in a few minutes."""
    data = Path(str(files("graft").joinpath(DEMO_DATA)))
    console.print(f"[bold]graft demo[/]: {strategy} on a CIFAR-10 sample ({data}; credit: CIFAR-10, Krizhevsky 2009), "
                  "backbone tf_efficientnet_lite0 with ImageNet weights, offline.")
    _train_and_report(data, strategy=strategy, backbone="tf_efficientnet_lite0", out=out, name=f"demo-{strategy}",
                      img_size=img_size, epochs=1, head_epochs=10, views=1)


@app.command()
def predict(
    target: Annotated[list[str], typer.Argument(help="RUN_OR_MODEL IMAGE... (or just IMAGE... with --imagenet).")],
    imagenet: Annotated[bool, typer.Option(help="Use the backbone's untouched ImageNet head.")] = False,
    backbone: Backbone = "tf_efficientnet_lite0",
    weights: Weights = "imagenet",
    top_k: Annotated[int, typer.Option(help="How many classes to show per image.")] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Top-k classes with probabilities for each image."""
    from ..data.images import load_image

    if imagenet:
        images = target
    else:
        if len(target) < 2:
            raise GraftError("Give a run folder and at least one image: graft predict runs/NAME photo.jpg (or use --imagenet).")
        model_path, images = target[0], target[1:]
    for image in images:  # check every image first: one bad file should not waste a model load
        load_image(image)
    if imagenet:
        from ..backbones import predict_imagenet

        results = [(image, top) for image, top in zip(images, predict_imagenet(images, backbone=backbone, weights=weights, top_k=top_k))]
    else:
        from ..classifier import load

        results = [(p.path, p.top) for p in load(model_path).predict(images, top_k=top_k)]
    if json_out:
        print(json.dumps([{"path": str(path), "top": [{"class": c, "probability": p} for c, p in top]} for path, top in results], indent=2))
        return
    for path, top in results:
        console.print(f"[bold]{path}[/]")
        for rank, (label, probability) in enumerate(top, 1):
            console.print(f"  {rank}. {label:<40} {probability:6.1%}")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Argument(help="Run folder (or model folder).")],
    data: Annotated[Path, typer.Argument(help="Folder of class folders, a split folder (uses test/ or val/), or a CSV.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="JSON file for the results (default: MODEL/evaluation.json).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix of a model on DATA."""
    from ..classifier import load
    from ..export import write_json_atomic

    evaluation = load(model).evaluate(data)
    target = output or (model if model.is_dir() else model.parent) / "evaluation.json"
    write_json_atomic(Path(target), {"data": str(data), **evaluation.to_dict()})
    if json_out:
        print(json.dumps(evaluation.to_dict(), indent=2))
        return
    for table in evaluation_tables(evaluation, str(data)):
        console.print(table)
    console.print(f"Written to {target}")


@app.command()
def summary(
    target: Annotated[str, typer.Argument(help="A backbone name or a run folder.")] = "tf_efficientnet_lite0",
    strategy: Strategy = "finetune",
    classes: Annotated[int, typer.Option(help="Number of classes of the new head.")] = 10,
    unfreeze: Annotated[int, typer.Option(help="partial: last stages to train.")] = 2,
    cut: Annotated[int, typer.Option(help="truncate: keep stages 0..K.")] = -2,
    hidden: Annotated[Optional[int], typer.Option(help="Hidden units in the head.")] = None,
    weights: Weights = "none",
) -> None:
    """Parameter counts (total, trainable, frozen) per stage, like Keras' model.summary()."""
    from ..backbones import create_backbone, stage_infos
    from ..heads import HeadConfig, create_head
    from ..model import GraftModel
    from ..strategies import StrategyOptions, get_strategy

    if Path(target).is_dir():
        from ..classifier import load

        loaded = load(target)
        model, title = loaded.model, f"{target} ({loaded.meta['strategy']}, {loaded.meta['backbone']})"
        model.freeze_backbone()
        plan, trainable = None, None
    else:
        plan = get_strategy(strategy)
        options = StrategyOptions(unfreeze=unfreeze, cut=cut)
        backbone = create_backbone(target, weights=weights, cut=plan.cut(options))
        model = GraftModel(backbone, create_head(backbone.num_features, classes, HeadConfig(hidden=hidden)))
        trainable = plan.trainable(backbone, options)
        model.freeze_backbone(trainable or [])
        title = f"{target} + head for {classes} classes, strategy {strategy}"
    table = Table(title=title)
    for column in ("stage", "module", "channels", "stride", "parameters", "trainable"):
        table.add_column(column, justify="right")
    params = dict(model.backbone.named_parameters())
    for stage in stage_infos(model.backbone):
        names = model.backbone.stage_params[stage.index]
        trainable_count = sum(params[n].numel() for n in names if params[n].requires_grad)
        table.add_row(str(stage.index), stage.module, str(stage.channels or ""), str(stage.reduction or ""), f"{stage.parameters:,}", f"{trainable_count:,}")
    head = model.param_counts(model.head)
    table.add_row("head", type(model.head[-1]).__name__, "", "", f"{head.total:,}", f"{head.trainable:,}")
    console.print(table)
    counts = model.param_counts()
    console.print(f"Total params: {counts.total:,}\nTrainable params: {counts.trainable:,}\nNon-trainable params: {counts.frozen:,}")
    if plan is not None and plan.head_phase is not None:
        console.print(f"(In the head phase only the head's {head.total:,} parameters train; the image phase trains the counts above.)"
                      if trainable is not None else "(Only the head trains: the backbone is frozen.)")


@app.command()
def backbones(
    pattern: Annotated[str, typer.Argument(help="Filter, e.g. resnet or 'efficientnet*'.")] = "",
    pretrained: Annotated[bool, typer.Option("--pretrained", help="Only models with ImageNet weights.")] = False,
    offline: Annotated[bool, typer.Option("--offline", help="Only models whose weights are on this machine.")] = False,
) -> None:
    """List backbones (every timm model), marking those whose weights work offline."""
    from ..backbones import list_backbones

    entries = list_backbones(pattern, pretrained_only=pretrained, offline_only=offline)
    table = Table(title=f"{len(entries)} backbones" + (f" matching {pattern!r}" if pattern else ""))
    table.add_column("name")
    table.add_column("offline", justify="center")
    table.add_column("ImageNet weights")
    for entry in entries:
        table.add_row(entry.name, "[green]yes[/]" if entry.offline else "", entry.source)
    console.print(table)


@app.command()
def strategies() -> None:
    """The training strategies and the course case each one serves."""
    from ..strategies import STRATEGIES

    table = Table(title="Strategies")
    for column in ("name", "what it does", "when"):
        table.add_column(column)
    for plan in STRATEGIES.values():
        table.add_row(plan.name, plan.summary, plan.case)
    console.print(table)


@cache_app.command("ls")
def cache_ls() -> None:
    """List cached feature sets."""
    from ..features import FeatureCache

    cache = FeatureCache()
    entries = cache.entries()
    table = Table(title=f"Feature cache: {cache.root}")
    for column in ("key", "what", "images", "dim", "MB"):
        table.add_column(column)
    for entry in entries:
        table.add_row(entry.key, entry.description, str(entry.count), str(entry.dim), f"{entry.size_bytes / 1e6:.1f}")
    console.print(table)
    console.print(f"{len(entries)} entries, {sum(e.size_bytes for e in entries) / 1e6:.1f} MB")


@cache_app.command("rm")
def cache_rm(keys: Annotated[Optional[list[str]], typer.Argument(help="Keys to remove (default: all).")] = None) -> None:
    """Remove cached feature sets (all of them without KEYS)."""
    from ..features import FeatureCache

    removed = FeatureCache().remove(keys or None)
    console.print(f"Removed {removed} cache entries.")
