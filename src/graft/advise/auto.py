"""`--strategy auto` (the default): the cheap answer first, fine-tuning only where it is likely to pay.

1. `graft advise`'s measurements (seconds: one forward pass over a sample) place the data in one of
   the course's four cases.
2. Too little data to retrain the base (under FINETUNE_MIN_PER_CLASS images per class): a frozen
   base, `linear-probe`; on data unlike ImageNet (case 2), `truncate` at an earlier stage where that
   stage's probe beat the last stage's by PROBE_MARGIN (a tie goes to the whole base: on generated
   colour images every stage probed 100%, and truncate's head trained to 67% where the linear probe
   got 100%).
3. Otherwise `probe-finetune`. Its head phase *is* the linear probe (logistic regression on cached
   features, seconds once they are cached). Then, before any image epoch:
   - the probe's validation accuracy decides whether fine-tuning is worth its time: at or above
     PROBE_GOOD_ENOUGH it is not (little error left to remove); on data unlike ImageNet (case 4)
     the line is PROBE_GOOD_ENOUGH_DIFFERENT, on data like it with under FINETUNE_MIN_IMAGES
     training images in all PROBE_GOOD_ENOUGH_FEW (too few images for fine-tuning to pay unless the
     probe leaves much error);
   - the time budget decides how many epochs: one training step is timed on a few batches, and
     only the epochs that fit in what is left of `--budget` run (none: the probe is kept);
   - fine-tuning follows graft's finetune recipe (a new head on augmented views, then everything);
     its best image epoch is kept unless the probe beats it on val by more than the val set can
     tell from noise (graft.strategies.builtin.keep_probe_or_tuned: McNemar's statistic over 1). A lead inside the noise is
     a tie, and a tie goes to the fine-tuned model: on every calibration set where auto could
     fine-tune, fine-tuning beat the probe on test (by 1.2 to 7.4 points), and on flowers-dev with
     Lite2 a one-image val lead of the probe (90% against 89%) had kept a model 3.2 points worse.

The thresholds fit the calibration measurements in docs/advise.md, "auto" (every set, the probe,
the fine-tuned model, compare's best, auto's own result and time; `python -m
benchmarks.calibration.auto_calibrate`), which are not repeated here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import TrainConfig, parse_duration, spoken_duration
from .advice import PROBE_MARGIN, Advice

# Fine-tuning is tried only below this probe accuracy on val: the insect photos (96.1%) gained 0.6
# points for 6.6x the time; flowers-dev (93%) gained 3.2 on test, CIFAR-10 (74-78%) 6-8 points.
PROBE_GOOD_ENOUGH = 0.95
# ... and on large data unlike ImageNet (case 4), below this one: ImageNet's features fit such data
# less, and fine-tuning them still paid near the top: generated digits probed 98% on val, and
# fine-tuning took test accuracy from 96.8% to 98.8% (benchmarks/calibration/auto_calibrate.py).
PROBE_GOOD_ENOUGH_DIFFERENT = 0.99
# ... and only from this many training images per class: 40 CIFAR images per class lost 7.5 points
# to fine-tuning, 80 flower photos per class gained 3.2.
FINETUNE_MIN_PER_CLASS = 50
# On data like ImageNet with under FINETUNE_MIN_IMAGES training images in all (fine-tuning retrains
# every weight of the base whatever the number of classes), fine-tuning is tried only below
# PROBE_GOOD_ENOUGH_FEW: there it gained nothing on test where the probe reached 87-96% on val, for
# 3.6-14x the probe's time (flowers-dev at 60 per class, 300 images: 86.8% against the probe's 86.4%;
# issue 24's 300 flower photos: 89.3% against 89.7%, its 245 insect photos 94.8% against 94.1-96.1%),
# and paid from 400 images (flowers-dev and grey flowers at 80 per class: 1.2-3.2 points). The image
# line lies halfway; a probe line alone (CIFAR-10's deer, horse and truck, 264 images, where the
# probe reached 79% and 83% on val: fine-tuning gained 0.3 and 6.7 points) set the second one, and
# sets neither was tuned on check both in docs/advise.md ("Few images: a higher bar"). Data unlike
# ImageNet has no such measurement and keeps FINETUNE_MIN_PER_CLASS and its own line.
FINETUNE_MIN_IMAGES = 350
PROBE_GOOD_ENOUGH_FEW = 0.85
# A validation pass is a forward pass only: about a third of a training step's time per image.
VAL_COST = 1 / 3
# On a CPU, auto times a training step on batches of SMALL_BATCH images and takes the full batch
# to be FULL_BATCH_SPEEDUP times faster per image, never running it: at 224 px, Lite0's step on 4
# images held 0.27 GB above the loaded model, on 8 0.43 GB, on 32 1.5 GB (issue 24; the default run on
# 10,000 CIFAR images peaked there). The speed-up is an estimate: 32 against 4 measured 1.3x to 2.6x
# on 2-core EPYCs (docs/benchmarks.md, "Memory of a default run"); where it flatters, the budget
# still holds, as fine-tuning stops once the budget leaves less than an epoch as long as those run.
SMALL_BATCH = 4
FULL_BATCH_SPEEDUP = 2.0


@dataclass
class AutoPlan:
    """What auto runs first, and whether fine-tuning may follow."""

    strategy: str  # "linear-probe", "truncate" or "probe-finetune"
    options: dict  # graft.train keywords the plan sets (strategy, cut, learning rates)
    reasons: list[str] = field(default_factory=list)
    good_enough: float = PROBE_GOOD_ENOUGH  # probe-finetune: fine-tune only below this probe accuracy on val
    budget: str = "10m"  # the --budget the plan was made for

    @property
    def may_finetune(self) -> bool:
        return self.strategy == "probe-finetune"

    def describe(self) -> str:
        return "\n".join([f"auto: {self.strategy}", *(f"  - {reason}" for reason in self.reasons)])

    def command(self, advice: Advice, data: str | Path = "DATA") -> str:
        """The `graft train` command that runs this plan on `data`: the strategy named where auto's
        choice is final (a frozen base), else `--strategy auto` itself (the default, so not written),
        since only auto decides after the probe whether to fine-tune."""
        options = dict(backbone=advice.backbone, weights=advice.weights, img_size=advice.img_size)
        if self.may_finetune:
            options["budget"] = self.budget
        else:
            options.update(self.options)
        return TrainConfig.from_options(**options).command(str(data))


def recommendation(advice: Advice, plan: AutoPlan, data: str | Path = "DATA") -> str:
    """What `graft advise` prints under its evidence table: the case and its evidence, the course's
    recipe for it, what `graft train DATA` (auto) does with the data and why, and the recommended
    command, which is what auto runs: one answer (the recipe is named as the course's)."""
    ran = plan.strategy + (f" --cut {plan.options['cut']}" if plan.options.get("cut") is not None else "")
    lines = [
        advice.describe(ran=ran),
        f"What `graft train {data}` (strategy auto, the default) does with this data:",
        plan.describe(),
        f"Recommended: {plan.command(advice, data)}",
    ]
    return "\n".join(line for line in (*lines, advice.describe_alternatives()) if line)


def auto_plan(advice: Advice, *, budget: str = "10m") -> AutoPlan:
    """The plan `--strategy auto` follows for data `advice` measured (graft advise prints it too)."""
    limit = parse_duration(budget)
    within = "no time limit" if limit is None else f"the --budget of {budget}"
    if advice.case == 2:
        probes = [stage.probe_accuracy for stage in advice.stages if stage.probe_accuracy is not None]
        best, last = advice.best_stage, advice.stages[-1]
        complete = len(probes) == len(advice.stages) > 1
        lead = max(probes[:-1]) - probes[-1] if complete and best != last.index else None
        if lead is not None and lead >= PROBE_MARGIN:
            return AutoPlan("truncate", {"strategy": "truncate", "cut": best, "lr": advice.lr}, [
                f"Small data unlike ImageNet: a head on the frozen base cut after stage {best}, whose features probed "
                f"{lead * 100:.0f} points better than the last stage's."])
        return AutoPlan("linear-probe", {"strategy": "linear-probe"}, [
            "Small data unlike ImageNet, but no earlier stage probed clearly better than the last (by "
            f"{PROBE_MARGIN * 100:.0f} points or more): a linear probe on the whole frozen base."])
    if advice.images_per_class < FINETUNE_MIN_PER_CLASS:
        return AutoPlan("linear-probe", {"strategy": "linear-probe"}, [
            f"{advice.images_per_class:g} training images per class (under {FINETUNE_MIN_PER_CLASS}): a linear probe on the "
            "frozen base; too few images to retrain the base, so fine-tuning is not tried."])
    options = {"strategy": "probe-finetune", "lr": advice.lr, "backbone_lr_ratio": advice.backbone_lr_ratio}
    good_enough, why_line = PROBE_GOOD_ENOUGH, ""
    if advice.case == 4:
        good_enough, why_line = PROBE_GOOD_ENOUGH_DIFFERENT, " (data unlike ImageNet: its features fit less, so the line is higher)"
    elif advice.train_images < FINETUNE_MIN_IMAGES:
        good_enough, why_line = PROBE_GOOD_ENOUGH_FEW, (
            f" (only {advice.train_images} training images in all, under {FINETUNE_MIN_IMAGES}: with so few, fine-tuning "
            "gained nothing on the calibration sets unless the probe left much error, so the line is lower)")
    reasons = [
        f"{advice.images_per_class:g} training images per class (at least {FINETUNE_MIN_PER_CLASS}): a linear probe "
        "first; then a head on augmented views and everything fine-tuned "
        f"(base at {advice.backbone_lr_ratio:g} x lr) if the probe's val accuracy is under {good_enough:.0%}{why_line} and "
        f"measured epochs fit in {within}; the fine-tuned model is kept unless the probe beats it on val by more "
        "than the noise."]
    sampled = advice.stages[-1].probe_accuracy if advice.stages else None
    if sampled is not None:
        reasons.append(f"On advise's sample the last stage probed {sampled:.0%} (a rough guess of the probe: "
                       "training measures the real one on val).")
    return AutoPlan("probe-finetune", options, reasons, good_enough=good_enough, budget=budget)


def multilabel_plan(positives: list[int], *, budget: str = "10m") -> AutoPlan:
    """auto's plan for data with several labels per image, from each label's training images
    (`positives`): the same rules as auto_plan's on the median label's count. Fine-tuning is tried
    when the probe answers fewer than PROBE_GOOD_ENOUGH of val images wholly right (exact match at
    0.5: what accuracy measures of single-label answers; on tags-dev the probe's val mAP was 0.961
    while its exact match was 74%), and kept unless the probe's val mAP beats it by more than the
    noise (graft advise's similarity measurements, single-label probes, are not made: data unlike
    ImageNet is not told apart here)."""
    limit = parse_duration(budget)
    within = "no time limit" if limit is None else f"the --budget of {budget}"
    median = float(np.median(positives)) if positives else 0.0
    if median < FINETUNE_MIN_PER_CLASS:
        return AutoPlan("linear-probe", {"strategy": "linear-probe"}, [
            f"Several labels per image, {median:g} training images per label (the median label; under "
            f"{FINETUNE_MIN_PER_CLASS}): a linear probe per label on the frozen base; too few to retrain the base."])
    return AutoPlan("probe-finetune", {"strategy": "probe-finetune"}, [
        f"Several labels per image, {median:g} training images per label (the median label; at least "
        f"{FINETUNE_MIN_PER_CLASS}): a linear probe per label first; then a head on augmented views and everything "
        f"fine-tuned if the probe gets fewer than {PROBE_GOOD_ENOUGH:.0%} of val images wholly right (every label: the "
        f"exact match, as accuracy counts single-label answers) and measured epochs fit in {within}; "
        "the fine-tuned model is kept unless the probe beats it on val by more than the noise."])


@dataclass
class FinetuneDecision:
    epochs: int  # image epochs to run (0: keep the probe)
    reason: str


def decide_finetune(*, probe_accuracy: float, epochs: int, epoch_seconds: float | None,
                    seconds_left: float | None, seconds_spent: float = 0.0,
                    good_enough: float = PROBE_GOOD_ENOUGH, figure: str = "on val",
                    timed_on: str = "") -> FinetuneDecision:
    """After the probe: how many fine-tuning epochs (up to `epochs`) are worth running and fit.

    `epoch_seconds`: one image epoch's estimated time (None: not measured, as when the probe is good
    enough); `seconds_left`: what the budget leaves (None: no limit); `seconds_spent`: the run's time so
    far (the budget a message suggests covers it too); `good_enough`: the probe accuracy from which
    fine-tuning is not tried (AutoPlan.good_enough); `figure`: what `probe_accuracy` is, for the
    messages (multi-label runs give the share of val images whose labels are all right); `timed_on`:
    how `epoch_seconds` was found, where not by timing full batches (e.g. "estimated from steps on
    4 images"), said beside it.
    """
    if probe_accuracy >= good_enough:
        return FinetuneDecision(0, f"the linear probe reached {probe_accuracy:.1%} {figure} (at least "
                                   f"{good_enough:.0%}): fine-tuning would cost minutes for little; kept the probe.")
    if seconds_left is not None and seconds_left <= 0 and epoch_seconds is None:  # spent before anything was timed
        return FinetuneDecision(0, f"the linear probe reached {probe_accuracy:.1%} {figure}, but the run has spent "
                                   f"its --budget already ({spoken_duration(seconds_spent)} so far): kept the probe "
                                   "(a larger --budget, or --budget 0 for no limit, would fine-tune).")
    if epoch_seconds is None or seconds_left is None:
        return FinetuneDecision(epochs, f"the linear probe reached {probe_accuracy:.1%} {figure}: fine-tuning up to {epochs} "
                                        "epochs (no time limit).")
    fit = int(max(0.0, seconds_left) // max(epoch_seconds, 1e-9))
    how = f" ({timed_on})" if timed_on else ""
    if fit < 1:
        return FinetuneDecision(0, f"the linear probe reached {probe_accuracy:.1%} {figure}, but one fine-tuning epoch "
                                   f"takes about {spoken_duration(epoch_seconds)}{how} and the budget leaves "
                                   f"{spoken_duration(max(0.0, seconds_left))}: kept the probe (--budget "
                                   f"{_budget_for(epoch_seconds, epochs, seconds_spent)} would fine-tune {epochs} epoch{'s' if epochs != 1 else ''}).")
    run = min(epochs, fit)
    capped = "" if run == epochs else f" (the budget caps {epochs} at {run}; --budget {_budget_for(epoch_seconds, epochs, seconds_spent)} allows all)"
    return FinetuneDecision(run, f"the linear probe reached {probe_accuracy:.1%} {figure}: fine-tuning {run} epochs of about "
                                 f"{spoken_duration(epoch_seconds)} each ({timed_on or 'measured'}), {spoken_duration(seconds_left)} left in the budget"
                                 f"{capped}.")


def epoch_seconds(seconds_per_image: float, *, train_images: int, val_images: int) -> float:
    """One image epoch: a training step per training image and a forward pass per val image."""
    return seconds_per_image * (train_images + VAL_COST * val_images)




def _budget_for(epoch_seconds: float, epochs: int, spent: float) -> str:
    """A --budget in whole minutes with room for what is spent, `epochs` epochs and a 20% margin."""
    minutes = math.ceil((spent + epoch_seconds * epochs) * 1.2 / 60)
    return f"{minutes}m"
