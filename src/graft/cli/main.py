"""The `graft` command: a thin layer over the Python API (graft.train, graft.load, ...)."""

from __future__ import annotations

import itertools
import json
import sys
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import GraftError
from .help import Group, use_graft_help
from .options import Backbone, Engine, Overwrite, Weights, cache_dir_option, config_options, explicit_options
from .render import (
    console,
    describe_os_error,
    error_console,
    evaluation_tables,
    history_table,
    interrupts_explained,
    quote,
    results_table,
    say,
)

if TYPE_CHECKING:
    from ..predictor import BatchPredictor

app = typer.Typer(
    help="Transfer learning for image classification: a folder of labelled photos in, a trained classifier out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=Group,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"graft {version('graft')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_print_version, is_eager=True,
                                                    help="Print graft's version and exit.")] = None,
) -> None:
    """Transfer learning for image classification: a folder of labelled photos in, a trained classifier out."""

# Commands that live beside their own library folder: graft.explain, graft.audit, graft.advise, graft.compare.
from . import advise as _advise  # noqa: E402
from . import audit as _audit  # noqa: E402
from . import cache as _cache  # noqa: E402
from . import compare as _compare  # noqa: E402
from . import explain as _explain  # noqa: E402
from . import serve as _serve  # noqa: E402
from . import similar as _similar  # noqa: E402
from . import suggest as _suggest  # noqa: E402

for _module in (_compare, _advise, _explain, _audit, _cache, _serve, _suggest, _similar):
    _module.register(app)

DEMO_DATA = "demo_data/cifar10-sample"


def main() -> None:
    """Entry point: user errors become one clear message and exit code 2, never a traceback; an
    interrupted command says what it was doing and exits 130."""
    try:
        app()
    except GraftError as error:
        error_console.print(f"[bold red]error:[/] {escape(str(error))}")
        sys.exit(2)
    except OSError as error:  # a folder not writable, a disk full: the system's words, and the file
        error_console.print(f"[bold red]error:[/] {escape(describe_os_error(error))}")
        sys.exit(2)


def _train_and_report(data, config, *, json_out: bool = False, resume: Path | None = None) -> None:
    from ..training.pipeline import resume_run, train

    log = None if json_out else say
    with interrupts_explained():
        if resume is not None:
            result = resume_run(resume, log=log, progress=not json_out)
        else:
            result = train(data, config, log=log, progress=not json_out)
    from ..report.health import training_problems

    problems = training_problems(result.metrics, result.record.classes, lr=result.record.config.optim.lr)
    if json_out:
        print(json.dumps(result.metrics.to_dict(), indent=2))
    else:
        if result.history:
            console.print(history_table(result.history))
        for split, evaluation in result.metrics.evaluations.items():
            for table in evaluation_tables(evaluation, split):
                console.print(table)
        console.print(results_table(result.metrics, result.record.strategy, result.record.backbone))
        run_dir = result.run_dir  # the run has said where its report is (graft.train's log)
        say(f"Saved model and logs in {run_dir} (model.safetensors, graft.json, metrics.json, logs/).")
        say(f"Next: graft predict {quote(run_dir)} IMAGE...   |   graft evaluate {quote(run_dir)} DATA")
    for problem in problems:  # after the results, where they are read last
        label = "[bold red]error:[/]" if problem.is_error else "[bold yellow]warning:[/]"
        error_console.print(f"{label} {escape(problem.message)}")
    if any(problem.is_error for problem in problems):
        sys.exit(1)


@app.command()
@cache_dir_option
@config_options()
def train(
    ctx: typer.Context,
    data: Annotated[Optional[Path], typer.Argument(help="Folder with train/ and val/ (and optional test/) class folders, a folder of class folders, or a CSV of path,label. With --config, the run's own data by default.", show_default=False)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="Replay a run: its graft.json (or a JSON of config groups); options given here override it.")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Go on with an interrupted run, in its folder, from its last completed epoch: same data, same options, same result.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    **options,
) -> None:
    """Train a classifier on DATA by transfer learning and save it in a run folder."""
    from ..config import TrainConfig

    if resume is not None:
        typed = explicit_options(ctx, options)
        if data is not None or config is not None or typed:
            raise GraftError("--resume RUN goes on with that run exactly as it started: give no DATA, --config or "
                             f"other options with it (given: {', '.join(['DATA'] * (data is not None) + ['--config'] * (config is not None) + [f'--{k}' for k in typed])}).")
        _train_and_report(None, None, json_out=json_out, resume=resume)
        return
    if config is not None:
        from ..record import read_config

        base, source = read_config(config)
        data = data if data is not None else (Path(source) if source else None)
        settings = base.replace(**explicit_options(ctx, options))
    else:
        settings = TrainConfig.from_options(**options)
    if data is None:
        raise GraftError("Give the training data: graft train DATA (a folder of class folders, or a CSV).")
    _train_and_report(data, settings, json_out=json_out)


@app.command()
@cache_dir_option
@config_options(only=("strategy", "img_size", "out"), defaults={"strategy": "linear-probe"},
                help={"strategy": "The strategy to train on the sample: linear-probe (its default here, the quickest) or "
                                  "any other that `graft strategies` lists, auto included."})
def demo(**options) -> None:
    """Train on the embedded CIFAR-10 sample (10 classes, 2,500 images), offline, in a few minutes."""
    from ..config import DEFAULT_BACKBONE, TrainConfig

    data = Path(str(files("graft").joinpath(DEMO_DATA)))
    strategy = options["strategy"]
    say(f"graft demo: {strategy} on a CIFAR-10 sample ({data}; credit: CIFAR-10, Krizhevsky 2009), "
        f"backbone {DEFAULT_BACKBONE} with ImageNet weights, offline.")
    _train_and_report(data, TrainConfig.from_options(**options, name=f"demo-{strategy}", epochs=1, head_epochs=10, views=1))


@app.command()
@cache_dir_option
def predict(
    target: Annotated[list[str], typer.Argument(help="MODEL PATH... (or just PATH... with --imagenet). MODEL is a run folder, "
                                                     "or a model.onnx (runs without torch), model.xml or model.pt from "
                                                     "`graft export`. A PATH is an image file, a folder (searched "
                                                     "recursively) or a glob such as 'photos/**/*.jpg'.")],
    imagenet: Annotated[bool, typer.Option(help="Use the backbone's untouched ImageNet head.")] = False,
    backbone: Backbone = "tf_efficientnet_lite0",
    weights: Weights = "imagenet",
    top_k: Annotated[int, typer.Option(help="How many classes to show per image.")] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="Write a CSV: path,label,probability, the next classes "
                                                                  "(class_2, probability_2, ...) and error; for a "
                                                                  "multi-label model path,labels, probability_CLASS for "
                                                                  "each class, and error.")] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Average each image's probabilities with its mirror image's.")] = False,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="A multi-label model: give each image every "
                                                                           "class whose probability reaches this, instead "
                                                                           "of each class's threshold chosen on val.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images read and predicted at once.")] = 64,
    engine: Engine = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Top-k classes with probabilities for each image (a multi-label model: the labels over their thresholds too).

    Images are read and predicted in batches, so any number of them fits in memory. An image that
    cannot be read is reported (path and reason) and the others are still answered; the exit
    status is then 1. Where ONNX Runtime is the engine (a CPU, under auto), a run folder predicts
    from its ONNX export, kept in graft's cache, without loading torch at all; the export is written
    at the end of training (about a second once the backbone's graph is cached), else the first
    time the run is predicted."""
    from ..data.inputs import expand_inputs
    from ..io import refuse_overwrite
    from ..prediction import Prediction, write_answers
    from ..progress import image_progress

    if top_k < 1:
        raise GraftError(f"--top-k {top_k}: use 1 or more (how many classes to show per image).")
    if csv_out is not None:
        refuse_overwrite([csv_out], flag="--csv", overwrite=overwrite)
    if not imagenet and len(target) < 2:
        raise GraftError("Give a run folder (or an exported model) and at least one image: graft predict runs/NAME "
                         "photo.jpg (or use --imagenet).")
    paths, failed = expand_inputs(target if imagenet else target[1:])
    if not paths:
        raise GraftError("No image to predict: " + "; ".join(str(bad) for bad in failed))
    with interrupts_explained(lambda: "while the model was being opened, before any image was predicted; nothing "
                                      "was written. Run the command again."):
        predictor = _predictor(None if imagenet else target[0], backbone=backbone, weights=weights, engine=engine)
    if threshold is not None:
        predictor.decision_thresholds(threshold)  # a bad --threshold is said before any image is read
    answers = itertools.chain([Prediction(str(bad.path), [], bad.reason) for bad in failed],  # matched nothing: first
                              predictor.predict_iter(paths, top_k=top_k, batch_size=batch_size, tta=tta,
                                                     threshold=threshold))
    done = [0]

    def interrupted() -> str:
        kept = (f"{csv_out} was not written (the partial CSV was not kept)" if csv_out is not None
                else "the answers shown above are all there is")
        return f"after {done[0]:,} of {len(paths) + len(failed):,} images; {kept}. Run the command again to predict them all."

    def each(_) -> None:
        done[0] += 1
        update(1)

    with interrupts_explained(interrupted), image_progress(len(paths), "predict", enabled=bool(json_out or csv_out)) as update:
        count, unread = write_answers(answers, columns=max(1, min(top_k, len(predictor.classes))), csv_path=csv_out,
                                      classes=predictor.classes if predictor.multilabel else None,
                                      json_out=sys.stdout if json_out else None,
                                      show=None if json_out or csv_out else _show_answer, each=each,
                                      unknown=getattr(predictor, "unknown", None) is not None)
    for bad in unread:
        error_console.print(f"[bold red]not read:[/] {escape(bad.path)}: {escape(bad.error or '')}")
    if csv_out is not None:
        written = f"Written {count:,} predictions to {csv_out}" + (f" ({len(unread):,} not read)" if unread else "")
        (error_console.print(escape(written)) if json_out else say(written))  # stdout stays JSON with --json
    if unread:
        sys.exit(1)


def _predictor(model: str | None, *, backbone: str, weights: str, engine: str) -> BatchPredictor:
    """What graft predict predicts with: the model file or run folder `model` (a run on a CPU opened as
    its kept export, written first where missing), else the backbone's own ImageNet head."""
    if model is None:
        from ..backbones.imagenet import ImageNetModel

        return ImageNetModel(backbone, weights=weights, engine=engine)
    from ..loader import open_predictor

    return open_predictor(model, engine=engine, say=lambda message: error_console.print(escape(message)))


def _show_answer(answer) -> None:
    """One answer on the terminal: its path in bold, then a line per class (Prediction.lines)."""
    first, *rest = answer.lines()
    console.print(f"[bold]{escape(first)}[/]")
    for line in rest:
        say(line)


@app.command("export")
@cache_dir_option
def export_command(
    model: Annotated[Path, typer.Argument(help="Run folder (or model folder).")],
    format: Annotated[str, typer.Option("--format", help="onnx: one file that ONNX Runtime, OpenVINO and others run; "
                                                         "openvino: OpenVINO IR (model.xml + model.bin; pip install 'graft[openvino]'); "
                                                         "torchscript: model.pt for libtorch / torch.jit.load.")] = "onnx",
    out: Annotated[Optional[Path], typer.Option("--out", help="The file to write (default: MODEL/model.onnx, model.xml or model.pt).")] = None,
    check_images: Annotated[Optional[list[Path]], typer.Option("--check-images", help="Images to check the export on (default: the run's val images, else graft's sample).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """The whole classifier for other programs (ONNX, OpenVINO IR or TorchScript), checked against the PyTorch model.

    Without --out the export goes into the run folder (an earlier export there is replaced); a file
    named with --out that exists already is replaced only with --overwrite."""
    from ..classifier import load
    from ..export.formats import FILE_NAMES, FORMATS, export, written_files
    from ..io import refuse_overwrite

    if format not in FORMATS:
        raise GraftError(f"--format {format!r}: choose one of {', '.join(FORMATS)}.")
    if out is not None:
        refuse_overwrite(written_files(out, format), flag="--out", overwrite=overwrite)
    target = out or (model if model.is_dir() else model.parent) / FILE_NAMES[format]
    classifier = load(model)
    exported = export(classifier, target, format=format, check_images=check_images, log=say)
    held = ("class names, each class's threshold, preprocessing, parity" if classifier.multilabel
            else "class names, preprocessing, parity")
    say(f"Written {exported.path} and {exported.metadata_path.name} ({held}).")


@app.command()
@cache_dir_option
def evaluate(
    model: Annotated[Path, typer.Argument(help="Run folder (or model folder), or a model.onnx, model.xml or model.pt from `graft export`.")],
    data: Annotated[Path, typer.Argument(help="Folder of class folders, a split folder (uses test/ or val/), or a CSV.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="JSON file for the results (default: MODEL/evaluation.json, "
                                                                          "or evaluation-2.json, ... when that exists).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    tta: Annotated[bool, typer.Option("--tta", help="Judge each image by the mean of its and its mirror image's "
                                                    "probabilities (twice the work).")] = False,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="A multi-label model: decide every class at "
                                                                           "this probability, instead of each class's "
                                                                           "threshold chosen on val.")] = None,
    engine: Engine = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Accuracy, per-class precision/recall/F1 and the confusion matrix of a model on DATA.

    A multi-label model (several labels per image) on a label file: mAP (macro and micro), per-class
    AP, precision, recall and F1 at each class's threshold, exact match and Hamming loss. Writes the
    results (JSON, with the engine and precision that computed them) and each image's prediction (a
    CSV beside it: path,true,predicted,probability; multi-label: path,true,predicted labels and
    probability_CLASS for each class). An earlier evaluation is never
    overwritten: without --output the files are evaluation.json, then evaluation-2.json, ...; a file
    named with --output that exists already (or its CSV) is replaced only with --overwrite."""
    from ..io import refuse_overwrite, write_json_atomic
    from ..loader import open_predictor
    from ..prediction import write_rows

    if output is not None:
        refuse_overwrite([output, _predictions_csv(Path(output))], flag="--output", overwrite=overwrite)
    predictor = open_predictor(model, engine=engine, say=lambda message: error_console.print(escape(message)))
    if threshold is not None:
        predictor.decision_thresholds(threshold)  # a bad --threshold is said before any image is read
    evaluation, rows = predictor.evaluate_images(data, tta=tta, threshold=threshold)
    folder = model if model.is_dir() else model.parent
    target = Path(output) if output is not None else next(
        path for index in itertools.count(1)
        if not (path := folder / ("evaluation.json" if index == 1 else f"evaluation-{index}.json")).exists()
        and not _predictions_csv(path).exists())
    predictions = _predictions_csv(target)
    write_rows(predictions, predictor.evaluation_columns(), rows)
    # a model with a score of unknown images: how many of these (known) images it called unknown
    unknown = ({"unknown": sum(row["unknown"] == "true" for row in rows), "images": len(rows),
                "threshold": predictor.unknown.threshold} if predictor.unknown is not None else None)
    write_json_atomic(target, {"data": str(data), "predictions": str(predictions), "tta": tta, "engine": predictor.engine,
                               "precision": predictor.precision, **evaluation.to_dict(),
                               **({"unknown": unknown} if unknown is not None else {})})
    if json_out:
        print(json.dumps({**evaluation.to_dict(), **({"unknown": unknown} if unknown is not None else {})}, indent=2))
        return
    for table in evaluation_tables(evaluation, str(data)):
        console.print(table)
    if unknown is not None and predictor.unknown is not None:
        meaning = ("unlike every training image" if predictor.task == "multilabel"
                   else f"none of the {len(predictor.classes)} classes")
        say(f"Called unknown ({meaning}): {unknown['unknown']} of "
            f"{unknown['images']} images (the score's threshold keeps {predictor.unknown.known_recall:.0%} of known "
            "val images)")
    say(f"Written to {target} (per-image predictions: {predictions})")


def _predictions_csv(evaluation_json: Path) -> Path:
    """Each image's prediction, beside the evaluation's JSON and named after it."""
    return evaluation_json.with_name(f"{evaluation_json.stem}-predictions.csv")


@app.command()
@config_options(only=("strategy", "unfreeze", "cut", "hidden", "img_size"), defaults={"strategy": "finetune"},
                help={"strategy": "The strategy whose trainable parameters to count (auto decides from data: name one)."})
def summary(
    target: Annotated[str, typer.Argument(help="A backbone name or a run folder.")] = "tf_efficientnet_lite0",
    classes: Annotated[int, typer.Option(help="Number of classes of the new head.")] = 10,
    weights: Annotated[str, typer.Option(help="imagenet, none (random init: nothing to download), or a weights file.")] = "none",
    layers: Annotated[bool, typer.Option("--layers", help="Every layer: output shape at the input size, parameters (with the convolution formula), stage, and whether it trains.")] = False,
    depth: Annotated[Optional[int], typer.Option(help="With --layers: group layers by the first N parts of their names (1: stem, blocks, head; 2: each block).")] = None,
    **options,
) -> None:
    """Parameter counts (total, trainable, frozen) per stage, like Keras' model.summary().

    For a run folder, "trainable" counts what the run trained: the head, plus the stages its image
    phase trained. With --layers, every layer (or block, with --depth N) as well."""
    from ..backbones import create_backbone, stage_infos
    from ..config import TrainConfig
    from ..heads import HeadConfig, create_head
    from ..model import GraftModel
    from ..strategies import get_strategy

    if Path(target).is_dir():
        from ..classifier import load

        loaded = load(target)
        record = loaded.record
        assert record is not None  # load() always reads one
        model, config = loaded.model, record.config
        title = f"{target} ({record.strategy}, {record.backbone})"
        plan = get_strategy(record.strategy)
    else:
        config = TrainConfig.from_options(**options, backbone=target)
        if config.strategy.strategy == "auto":
            raise GraftError("--strategy auto decides from the data which strategy trains; summary needs one named, "
                             "e.g. --strategy finetune or --strategy linear-probe.")
        plan = get_strategy(config.strategy.strategy)
        backbone = create_backbone(target, weights=weights, cut=plan.cut(config.strategy), img_size=options.get("img_size"))
        head = HeadConfig(hidden=config.strategy.hidden, dropout=config.strategy.dropout)
        model = GraftModel(backbone, create_head(backbone.num_features, classes, head))
        title = f"{target} + head for {classes} classes, strategy {plan.name}"
    trainable = plan.trainable(model.backbone, config.strategy) if plan.image_phase else None
    model.freeze_backbone(trainable or [])
    if depth is not None and (not layers or depth < 1):
        raise GraftError(f"--depth {depth}: use 1 or more, with --layers (e.g. --layers --depth 2).")
    if layers:
        from ..explain.layers import layer_table
        from .explain import layers_table

        console.print(layers_table(layer_table(model, depth=depth), title=escape(title)))
    table = Table(title=escape(title))
    for column in ("stage", "module", "channels", "stride", "parameters", "trainable"):
        table.add_column(column, justify="right")
    params = dict(model.backbone.named_parameters())
    for stage in stage_infos(model.backbone):
        names = model.backbone.stage_params[stage.index]
        trainable_count = sum(params[n].numel() for n in names if params[n].requires_grad)
        table.add_row(str(stage.index), stage.module, str(stage.channels or ""), str(stage.reduction or ""), f"{stage.parameters:,}", f"{trainable_count:,}")
    head_counts = model.param_counts(model.head)
    table.add_row("head", type(list(model.head.children())[-1]).__name__, "", "", f"{head_counts.total:,}", f"{head_counts.trainable:,}")
    console.print(table)
    counts = model.param_counts()
    console.print(f"Total params: {counts.total:,}\nTrainable params: {counts.trainable:,}\nNon-trainable params: {counts.frozen:,}")
    if plan.head_phase is not None:
        say(f"(In the head phase only the head's {head_counts.total:,} parameters train; the image phase trains the counts above.)"
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
        table.add_row(escape(plan.name), escape(plan.summary), escape(plan.case))
    console.print(table)


use_graft_help(app)  # last: every command above is registered
