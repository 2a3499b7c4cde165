"""graft's six strategies. The course's four cases map onto them (small/large data x similar/different
from ImageNet):
- small, similar   -> linear-probe or feature-extract (freeze everything, train a new head)
- small, different -> truncate (cut the network at an earlier stage, train a head there)
- large, similar   -> finetune or partial (start from ImageNet, train the base slowly)
- large, different -> finetune, or scratch as the baseline it must beat
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import GraftError
from .base import Strategy, register


@register
class LinearProbe(Strategy):
    name = "linear-probe"
    summary = "Frozen backbone; features once; logistic-regression head (no augmentation)."
    case = "small data, similar to ImageNet"
    cases = (1,)
    head_phase = "logreg"
    augment_images = False

    def check(self, config):
        if config.strategy.hidden is not None:
            raise GraftError("linear-probe fits a logistic regression, a linear head: leave out --hidden.")


@register
class FeatureExtract(Strategy):
    name = "feature-extract"
    summary = "Frozen backbone (BatchNorm in eval mode); new head trained with augmentation."
    case = "small data, similar to ImageNet"
    cases = (1,)


@register
class Finetune(Strategy):
    name = "finetune"
    summary = "Head first on the frozen base, then everything with a smaller learning rate for the base."
    case = "large data, similar to ImageNet"
    cases = (3, 4)
    image_phase = True


@register
class ProbeFinetune(Strategy):
    """A linear probe first, then graft's finetune recipe, keeping the fine-tuned model unless the probe
    is clearly better on val: what `--strategy auto` runs on data large enough to fine-tune.

    The probe is the cheap first answer and the fallback. Fine-tuning does not start from the probe's
    head (LP-FT): where the probe already fits the training images (flowers-dev: 400 photos, 1,280
    features), fine-tuning from it had nothing to learn and only drifted: val fell from the probe's
    93% to 83% after one epoch and never passed 91% in 15 (lr 1e-3, base 1e-4), nor 92% with a
    ten times smaller rate; graft's finetune (a head trained on augmented views, then everything)
    reached 94% val in 5 epochs (benchmarks/calibration/auto_calibrate.py, docs/advise.md).

    Under auto, whether to fine-tune at all, and for how many epochs, is auto's decision
    (`RunState.finetune_epochs`: the probe's val accuracy and the measured epochs against --budget);
    none, and the run is the linear probe.
    """

    name = "probe-finetune"
    summary = ("A linear probe first; then a head on augmented views and everything fine-tuned, as finetune does; "
               "the fine-tuned model is kept unless the probe beats it on val by more than the noise.")
    case = "large data: what --strategy auto fine-tunes with"
    cases = (3, 4)
    head_phase = "logreg"
    image_phase = True

    def check(self, config):
        if config.strategy.hidden is not None:
            raise GraftError("probe-finetune starts from a logistic regression, a linear head: leave out --hidden.")

    def before_images(self, run):
        if run.auto and run.finetune_epochs() == 0:
            run.skip_images(recorded_as=LinearProbe.name)
            return
        # The probe waits aside, on the pretrained base it was fitted to; a new head learns from
        # augmented views first, as in finetune (fine-tuning from a probe that already fits the
        # training images only drifts).
        model = run.model
        run.scratch["probe"] = _copy(model.head.state_dict())
        run.scratch["probe_base"] = _copy(model.backbone.state_dict())
        run.scratch["probe_right"] = run.val_right(head_phase=True)
        run.fresh_head()
        run.train_head(Finetune().head_views(run.config.augment))

    def image_baseline(self, run):
        return None  # every image epoch counts: the best one is weighed against the probe afterwards

    def image_callbacks(self, run):
        """Stop fine-tuning after an epoch where it cannot catch the probe (single-label: the probe's
        figure and the epochs' are the same measure), or where, under auto, the --budget no longer
        holds another epoch as long as those run (auto decided on an estimate; this holds it)."""
        import time

        from ..config import parse_duration
        from ..training.budget import budget_left_for_another_epoch
        from ..training.callbacks import StopWhenBehind

        budget = parse_duration(run.config.strategy.budget) if run.auto else None
        probe_right = run.scratch["probe_right"]
        probe, images, started = float(np.mean(probe_right)), len(probe_right), time.perf_counter()

        def judge(best: float, epochs_done: int) -> str | None:
            reason = None if run.multilabel else cannot_catch_probe(probe=probe, best=best, epochs_done=epochs_done,
                                                                    val_images=images)
            if reason is None and budget is not None:
                now = time.perf_counter()
                reason = budget_left_for_another_epoch(seconds_left=budget - (now - run.started), epochs_done=epochs_done,
                                                       epoch_seconds=(now - started) / epochs_done)
            if reason is not None:
                run.trail["stopped_fine_tuning"] = reason
            return reason

        monitor = "val_map" if run.multilabel else "val_acc"
        return [StopWhenBehind(judge, monitor=monitor, say=lambda reason: run.say(f"{self.name}: {reason}"))]

    def after_images(self, run, best_epoch):
        # The best image epoch against the probe, on the same val images: the probe stays only where
        # its lead is more than noise (keep_probe_or_tuned says why a tie goes to fine-tuning).
        decision = keep_probe_or_tuned(run.scratch["probe_right"], run.val_right(),
                                       figure="exact match on val" if run.multilabel else "on val")
        if decision.keep == "probe":  # the probe's head goes back on the base it was fitted to
            run.model.backbone.load_state_dict(run.scratch["probe_base"])
            run.model.head.load_state_dict(run.scratch["probe"])
        epoch = "" if decision.keep == "probe" or best_epoch is None else f" (image epoch {best_epoch + 1})"
        run.say(f"{self.name}: {decision.reason}{epoch}.")
        run.trail["kept"] = decision.keep


# How much fine-tuning's best val accuracy still rose after image epoch 1, 2, 3 and 4 (and later) on
# the calibration sets of benchmarks/calibration/finetune_curves.py (flowers, catdog, digits,
# flowers-grey, cifar3; 5 epochs of probe-finetune): at most 11 points after the first epoch
# (catdog, 71% to 82%), 4.3 after the second (digits), 1.3 after the third, 1 after the fourth.
# Every set trailed the probe by 3 to 6 points after its first epoch and caught up; on the held-out
# sets (flowers-dev with 60 photos per class; five CIFAR-10 classes at 100 per class) the rule stops
# none. It stops only fine-tuning that trails by more than any calibration set ever caught up.
CATCH_UP = (0.11, 0.045, 0.015, 0.01)


def cannot_catch_probe(*, probe: float, best: float, epochs_done: int, val_images: int) -> str | None:
    """After image epoch `epochs_done` of probe-finetune: why fine-tuning should stop, or None.

    It stops where its best val accuracy so far (`best`) trails the probe's (`probe`, on the same
    `val_images` images) by more than fine-tuning caught up after that epoch on any calibration set
    (CATCH_UP) plus two standard errors of the probe's val accuracy: the rest of the epochs could not
    plausibly bring it level, and the probe would be kept anyway.
    """
    catch_up = CATCH_UP[min(max(epochs_done, 1), len(CATCH_UP)) - 1]
    noise = 2 * math.sqrt(max(probe * (1 - probe), 1e-12) / max(val_images, 1))
    behind = probe - best
    if behind <= catch_up + noise:
        return None
    return (f"stopped fine-tuning after image epoch {epochs_done}: its best val accuracy {best:.1%} trails the "
            f"probe's {probe:.1%} by {behind:.1%}, more than fine-tuning caught up after that epoch on any "
            f"calibration set ({catch_up:.1%}) plus two standard errors ({noise:.1%}).")


def _copy(state: dict) -> dict:
    return {name: value.clone() for name, value in state.items()}


@dataclass
class KeepDecision:
    keep: str  # "probe" or "fine-tuned"
    reason: str


# The probe must lead the fine-tuned model on val by more than this many standard errors of the
# difference to be kept (McNemar's statistic, (b - c) / sqrt(b + c), over the val images only one of
# the two gets right). One standard error, as --backbone auto asks of a larger backbone's lead.
PROBE_LEAD_Z = 1.0


def keep_probe_or_tuned(probe_right, tuned_right, *, figure: str = "on val") -> KeepDecision:
    """After probe-finetune's image epochs: keep the probe or the fine-tuned model, from which val images
    each gets right (boolean arrays over the same images).

    The fine-tuned model is kept unless the probe's lead is more than PROBE_LEAD_Z standard errors
    of the paired difference: 100 val images cannot tell one or two images from noise, and where
    the two tie, fine-tuning won on test on every calibration set (docs/advise.md).
    """
    probe_right, tuned_right = np.asarray(probe_right, dtype=bool), np.asarray(tuned_right, dtype=bool)
    if probe_right.shape != tuned_right.shape or probe_right.ndim != 1:
        raise ValueError(f"expected two answers per val image, got shapes {probe_right.shape} and {tuned_right.shape}")
    n = len(probe_right)
    only_probe = int(np.sum(probe_right & ~tuned_right))  # McNemar's b and c
    only_tuned = int(np.sum(tuned_right & ~probe_right))
    probe, tuned = probe_right.mean() if n else 0.0, tuned_right.mean() if n else 0.0
    scores = f"the fine-tuned model {tuned:.1%} {figure}, the probe {probe:.1%}"
    if only_probe <= only_tuned:
        return KeepDecision("fine-tuned", f"fine-tuned: {scores}")
    z = (only_probe - only_tuned) / math.sqrt(only_probe + only_tuned)
    lead = f"{only_probe - only_tuned} of {n} val images"
    noise = f"({z:.1f} standard errors; {only_probe + only_tuned} images only one of them got right)"
    if z > PROBE_LEAD_Z:
        return KeepDecision("probe", f"kept the probe: {scores}, a lead of {lead}, more than the noise {noise}")
    return KeepDecision("fine-tuned", f"fine-tuned: {scores}; the probe's lead of {lead} is within the noise {noise}, "
                                      "and on a tie the fine-tuned model is kept")


@register
class Partial(Strategy):
    name = "partial"
    summary = "Like finetune, but only the last N stages of the base train (--unfreeze N)."
    case = "medium data, similar to ImageNet"
    cases = (3,)
    image_phase = True

    def trainable(self, backbone, options):
        return backbone.last_stages(options.unfreeze)


@register
class Truncate(Strategy):
    name = "truncate"
    summary = "Cut the base after stage K (--cut K), frozen; train a head on those earlier features."
    case = "small data, different from ImageNet"
    cases = (2,)

    def cut(self, options):
        return options.cut


@register
class Scratch(Strategy):
    name = "scratch"
    summary = "Same architecture, random initialisation, everything trained: the baseline."
    case = "large data, different from ImageNet (baseline)"
    cases = (4,)
    pretrained = False
    head_phase = None
    image_phase = True
