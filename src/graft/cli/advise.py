"""`graft advise`: a thin command over graft.advise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..advise.advice import LARGE_PER_CLASS, SAMPLE_PER_CLASS
from .options import cache_dir_option, config_options
from .render import console, say


@cache_dir_option
@config_options(only=("backbone", "weights", "img_size", "val_split", "seed", "precision", "workers", "budget"),
                help={"weights": "imagenet, or the path of a .safetensors/.pth file (pretrained weights only)."})
def advise(
    data: Annotated[Path, typer.Argument(help="Training data, as for `graft train`.")],
    sample_per_class: Annotated[int, typer.Option(help="Training images per class the measurements use.")] = SAMPLE_PER_CLASS,
    large_per_class: Annotated[float, typer.Option(help="Median training images per class from which data counts as large.")] = LARGE_PER_CLASS,
    json_out: Annotated[bool, typer.Option("--json", help="Print the advice as JSON.")] = False,
    **options,
) -> None:
    """Measure DATA (size, similarity to ImageNet, best stage to cut) and recommend what to train: what
    `graft train DATA` (strategy auto) does with it, beside the course's recipe for its case."""
    from ..advise import advise as measure_and_advise
    from ..advise.auto import auto_plan, recommendation

    budget = options.pop("budget")
    if _multilabel_advice(data, budget=budget, json_out=json_out, val_split=options["val_split"], seed=options["seed"]):
        return
    advice = measure_and_advise(data, sample_per_class=sample_per_class, large_per_class=large_per_class,
                                progress=not json_out, budget=budget, **options)
    plan = auto_plan(advice, budget=budget)
    if json_out:
        print(json.dumps({**advice.to_dict(), "auto": {"strategy": plan.strategy, "reasons": plan.reasons,
                                                        "command": plan.command(advice, data)}}, indent=2))
        return
    console.print(evidence_table(advice))
    say(recommendation(advice, plan, data))
    cut = plan.options.get("cut")
    if cut is not None:  # what the cut keeps, seen: the images its last stage's channels answer to
        say(f"After training, see what stage {cut} responds to: graft explain RUN --channels --stage {cut}")


def _multilabel_advice(data: Path, *, budget: str, json_out: bool, val_split: float, seed: int) -> bool:
    """Several labels per image: auto's plan from the images per label (graft.advise.auto.multilabel_plan),
    printed with the command; graft advise's measurements (single-label probes per stage) are not made.
    False for single-label data, which the measurements advise on."""
    from ..advise.auto import multilabel_plan
    from ..config import TrainConfig
    from ..data.discover import find_data

    splits = find_data(data, val_split=val_split, seed=seed, task="auto", check_images=False)
    if splits.task != "multilabel":
        return False
    per_label = splits.counts("train")  # an image counts once for each of its labels
    plan = multilabel_plan(list(per_label.values()), budget=budget)
    command = TrainConfig.from_options(budget=budget).command(str(data))
    if json_out:
        print(json.dumps({"task": "multilabel", "classes": splits.classes,
                          "images_per_label": per_label,
                          "auto": {"strategy": plan.strategy, "reasons": plan.reasons, "command": command}}, indent=2))
        return True
    say(f"{data}: several labels per image ({len(splits.classes)} labels, {len(splits.train)} training images). "
        "graft advise measures similarity to ImageNet with single-label probes, which several labels per image do "
        "not give; auto plans from the images per label:")
    say(plan.describe())
    say(f"Recommended: {command}")
    return True


def evidence_table(advice) -> Table:
    """One row per stage: channels, BatchNorm drift, probe accuracy, and the best cut marked."""
    from ..advise import DRIFT_DIFFERENT

    size = f"{advice.img_size} px" if advice.img_size else "own size"
    table = Table(title=f"{advice.backbone}, {size}: {advice.sampled} images, {advice.seconds:.0f} s")
    for column in ("stage", "channels", "BN drift", "probe accuracy", ""):
        table.add_column(column, justify="right" if column else "left")
    for stage in advice.stages:
        drift = "-" if stage.bn_drift is None else f"{stage.bn_drift:.2f}"
        if stage.bn_drift is not None and stage.bn_drift >= DRIFT_DIFFERENT:
            drift = f"[yellow]{drift}[/]"
        probe = "-" if stage.probe_accuracy is None else f"{stage.probe_accuracy:.1%}"
        best = stage.index == advice.best_stage
        table.add_row(str(stage.index), str(stage.channels), drift, f"[bold]{probe}[/]" if best else probe,
                      "<- best cut" if best else "")
    table.caption = f"yellow: drift {DRIFT_DIFFERENT:.2f} or more, unlike ImageNet"
    return table


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the `graft` app."""
    app.command()(advise)
