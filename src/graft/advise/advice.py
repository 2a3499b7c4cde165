"""`graft advise`: which of the course's four transfer-learning cases a dataset is in, measured.

The course sorts transfer learning by two questions: is the new dataset small or large, and is it
similar to ImageNet or different? Each answer pair is a case with its own recipe:

| case | data            | recipe                                             | graft strategy            |
|------|-----------------|----------------------------------------------------|---------------------------|
| 1    | small, similar  | freeze everything, train a new head                | linear-probe              |
| 2    | small, different| cut the network at an earlier stage, head there    | truncate --cut K          |
| 3    | large, similar  | fine-tune everything from ImageNet weights         | finetune                  |
| 4    | large, different| fine-tune from ImageNet weights (scratch: baseline)| finetune, base moves more |

Size is counted: the median number of training images per class. Similarity is measured on a
small stratified sample, with one forward pass of the pretrained network (see `measure`):

- BatchNorm drift: each BatchNorm layer stores the spread of its input over ImageNet; on data
  like ImageNet the spread stays close to it, on data unlike ImageNet the late, object-level
  layers fire far more or far less. The last stage's drift is the main signal.
- The cut search: a linear probe on each stage's pooled features. On ImageNet-like data the
  deepest stage probes best; on data unlike it an earlier stage does as well or better, and that
  stage is where `truncate` should cut.

Every threshold below was measured, not guessed: docs/advise.md has the numbers and commands.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import AUTO, DEFAULT_BACKBONE, TrainConfig
from ..errors import GraftError
from ..runtime import Runtime
from ..strategies import strategies_for_case

if TYPE_CHECKING:
    from ..data.discover import DataSplits
    from .backbone import BackboneChoice

# Size. "Large" starts at this median number of training images per class. The course calls the
# line subjective; graft draws it where its finetune starts to beat linear-probe. On the CIFAR-10
# sample at 64 px (docs/advise.md), linear-probe was 1 point ahead at 25 and 50 per class, and
# finetune 2.4 points ahead at 100 and 4.8 at 200; on cifar10-dev (450 per class, 224 px) finetune
# is several points ahead. Move it with `large_per_class` / --large-per-class.
LARGE_PER_CLASS = 100

# Similarity. A stage's drift is the mean over its BatchNorm layers and their channels of
# |ln(std of the layer's input on the data / std on ImageNet)|. At the last stage it measured
# 0.13-0.29 on natural images (CIFAR-10 at 64-224 px, photo crops at 96-224 px) and 0.41-0.65 on
# generated textures and digits and on grey material photos (docs/advise.md); 0.35 is midway, far
# from sampling noise (CIFAR-10's was 0.22 in each of three samples of 30 per class).
DRIFT_DIFFERENT = 0.35

# The probes can overrule the drift only by a clear margin: between samples of 30 per class, the
# last stage's lead over the best earlier stage ranged from -0.04 to +0.09 on CIFAR-10 at 64 px
# (docs/advise.md), so a smaller gap is noise.
PROBE_MARGIN = 0.10

# Evidence. 30 images per class (300 for CIFAR-10) keep the measurement to 1-2 s at 64-96 px on two
# CPU cores and the drift within 0.02 between samples; the probe is noisier (see PROBE_MARGIN).
SAMPLE_PER_CLASS = 30
# Ridge penalties the probe chooses from by leave-one-out accuracy, from almost none to strong (on
# standardised features). On 64 px CIFAR-10 the choice grew from 0.1 at stage 0 to 1000 at stage 4;
# textures that every stage separates perfectly took the weakest, in effect plain least squares.
PROBE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)

# Learning rates. The head always starts at graft's default AdamW rate, 1e-3. The base moves at a
# fraction of it: 0.1 (graft's default) when ImageNet's features already fit the data, so they are
# refined, not overwritten; 0.3 when the data is unlike ImageNet and the late features have to
# change more (a judgement, not benchmarked: between the default and training at the full rate,
# which is what `scratch` does).
HEAD_LR = 1e-3
BACKBONE_LR_RATIO_SIMILAR = 0.1
BACKBONE_LR_RATIO_DIFFERENT = 0.3

CASES = {
    (False, True): 1,  # (large, similar) -> case
    (False, False): 2,
    (True, True): 3,
    (True, False): 4,
}


@dataclass
class StageEvidence:
    """What one backbone stage showed: its BatchNorm drift and its linear-probe accuracy."""

    index: int
    channels: int
    bn_drift: float | None  # None: no BatchNorm layer in this stage (e.g. transformers)
    probe_accuracy: float | None  # None: too few images per class for a cross-validated probe


@dataclass
class Advice:
    """Which case the data is in, the evidence, and the course's recipe for that case (`strategy` and
    its settings). What `--strategy auto` runs on the data follows from it (graft.advise.auto.auto_plan):
    usually the recipe, but a frozen base wherever there are too few images to retrain one, and a
    truncated base only on a clear lead of an earlier stage. graft.advise.auto.recommendation says
    both, and recommends what auto runs."""

    case: int  # 1 small+similar, 2 small+different, 3 large+similar, 4 large+different
    size: str  # "small" | "large"
    similarity: str  # "similar" | "different"
    images_per_class: float  # median training images per class
    train_images: int  # training images in all
    strategy: str  # one of graft.strategies.STRATEGIES (never "auto")
    cut: int | None  # truncate: keep stages 0..cut, else None
    unfreeze: int | None  # partial: stages to unfreeze, else None
    lr: float  # head learning rate
    backbone_lr_ratio: float  # backbone learning rate as a fraction of lr
    stages: list[StageEvidence]  # one row per backbone stage
    best_stage: int  # the cut search's best stage
    reasons: list[str]  # why this case: the measurements, in words
    alternatives: list[str] = field(default_factory=list)  # other reasonable choices, in words
    recipe: list[str] = field(default_factory=list)  # why the course's recipe for the case is `strategy`
    backbone: str = DEFAULT_BACKBONE
    weights: str = "imagenet"
    img_size: int | None = None  # the input size measured at (None: the backbone's own)
    sampled: int = 0  # images the measurements used
    seconds: float = 0.0
    backbone_choice: BackboneChoice | None = None  # --backbone auto: the candidates' probes (graft.advise.backbone)

    def train_options(self) -> dict:
        """The keywords of `graft.train` this advice sets."""
        options = dict(strategy=self.strategy, lr=self.lr, backbone_lr_ratio=self.backbone_lr_ratio)
        if self.cut is not None:
            options["cut"] = self.cut
        if self.unfreeze is not None:
            options["unfreeze"] = self.unfreeze
        return options

    def command(self, data: str | Path = "DATA") -> str:
        """The `graft train` command line of the course's recipe (options left at their defaults omitted)."""
        config = TrainConfig.from_options(**self.train_options(), backbone=self.backbone, weights=self.weights,
                                          img_size=self.img_size)
        return config.command(str(data))

    def to_dict(self) -> dict:
        return asdict(self)

    def headline(self) -> str:
        """One line: the case and why in brief."""
        relation = "to" if self.similarity == "similar" else "from"
        return (f"Case {self.case}: {self.size} data ({self.images_per_class:g} training images per class), "
                f"{self.similarity} {relation} ImageNet.")

    def recipe_name(self) -> str:
        """The course's recipe for the case, as strategy and settings: `truncate --cut 0`, `finetune`."""
        settings = "".join(f" --{name} {value}" for name, value in (("cut", self.cut), ("unfreeze", self.unfreeze))
                           if value is not None)
        return f"{self.strategy}{settings}"

    def describe(self, *, ran: str | None = None) -> str:
        """The case, its evidence and the course's recipe for it, in lines for the terminal. `ran`: the
        strategy auto runs on the data, said beside the recipe (graft.advise.auto.recommendation,
        what `graft advise` prints, adds auto's plan and the recommended command)."""
        same = ran is None or ran == self.recipe_name()
        return "\n".join([
            *([self.backbone_choice.describe()] if self.backbone_choice is not None else []),
            self.headline(),
            *(f"  - {reason}" for reason in self.reasons),
            f"The course's recipe for case {self.case}: {self.recipe_name()}"
            + ("" if ran is None else ", which is what auto runs here." if same
               else f"; auto runs {ran} here instead (below)."),
            *(f"  - {reason}" for reason in self.recipe),
        ])

    def describe_alternatives(self) -> str:
        """The other reasonable strategies for the case, in lines ("" when there are none)."""
        return "\n".join(["Alternatives:", *(f"  - {alternative}" for alternative in self.alternatives)]
                         if self.alternatives else [])


def advise(
    data: str | Path,
    *,
    backbone: str = DEFAULT_BACKBONE,
    weights: str = "imagenet",
    img_size: int | None = None,
    val_split: float = 0.2,
    seed: int = 0,
    sample_per_class: int = SAMPLE_PER_CLASS,
    large_per_class: float = LARGE_PER_CLASS,
    workers: int | None = None,
    precision: str = "auto",
    progress: bool = True,
    budget: str = "10m",
) -> Advice:
    """Find the data in `data` (as `graft train` would split it) and advise on it.

    `backbone="auto"` first chooses among the offline Lite backbones as `graft train --backbone auto`
    does (`budget` bounds that choice the same way), and advises for the one chosen.
    """
    from ..data.discover import find_data

    _check_options(sample_per_class=sample_per_class, weights=weights, large_per_class=large_per_class)
    runtime = Runtime.resolve(precision=precision, workers=workers, progress=progress)
    splits = find_data(data, val_split=val_split, seed=seed)
    choice = None
    if backbone == AUTO:
        from ..audit.checks import class_weights
        from ..features import FeatureCache
        from .backbone import choose_backbone

        choice = choose_backbone(splits.train, img_size=img_size, seed=seed, runtime=runtime, cache=FeatureCache(),
                                 balanced=class_weights(splits, "auto") is not None, budget=budget, weights=weights)
        backbone = choice.backbone
    advice = advise_splits(splits, backbone=backbone, weights=weights, img_size=img_size,
                           sample_per_class=sample_per_class, large_per_class=large_per_class, seed=seed,
                           runtime=runtime)
    return replace(advice, backbone_choice=choice)


def advise_splits(
    splits: DataSplits,
    *,
    backbone: str = DEFAULT_BACKBONE,
    weights: str = "imagenet",
    img_size: int | None = None,
    sample_per_class: int = SAMPLE_PER_CLASS,
    large_per_class: float = LARGE_PER_CLASS,
    seed: int = 0,
    runtime: Runtime | None = None,
) -> Advice:
    """Measure size and similarity of `splits`' training images and recommend a strategy."""
    _check_options(sample_per_class=sample_per_class, weights=weights, large_per_class=large_per_class)
    started = time.perf_counter()
    stages, sampled = _cut_search(splits, backbone=backbone, weights=weights, img_size=img_size,
                                  sample_per_class=sample_per_class, seed=seed, runtime=runtime or Runtime.resolve())
    per_class = float(np.median(list(splits.counts("train").values())))
    large = per_class >= large_per_class
    similar, similarity_reasons = judge_similarity(stages)
    best = best_stage(stages)
    size_reason = (f"{per_class:g} training images per class (median) is {'at least' if large else 'under'} "
                   f"{large_per_class:g}, graft's line between small and large data.")
    advice = recommend(CASES[(large, similar)], stages=stages, best=best, reasons=[size_reason, *similarity_reasons],
                       images_per_class=per_class, train_images=len(splits.train))
    return replace(advice, backbone=backbone, weights=weights, img_size=img_size, sampled=sampled,
                   seconds=time.perf_counter() - started)


def cut_search(
    splits: DataSplits,
    *,
    backbone: str = DEFAULT_BACKBONE,
    weights: str = "imagenet",
    img_size: int | None = None,
    sample_per_class: int = SAMPLE_PER_CLASS,
    seed: int = 0,
    runtime: Runtime | None = None,
) -> list[StageEvidence]:
    """A linear probe (and the BatchNorm drift) at every stage; `best_stage` of the result is the cut."""
    _check_options(sample_per_class=sample_per_class, weights=weights)
    return _cut_search(splits, backbone=backbone, weights=weights, img_size=img_size,
                       sample_per_class=sample_per_class, seed=seed, runtime=runtime or Runtime.resolve())[0]


def best_stage(stages: list[StageEvidence]) -> int:
    """The stage whose features probe best (the earliest on ties: a shorter network does as well).

    Without probe accuracies (too few images per class) it is the last stage: no evidence to cut.
    """
    accuracies = [stage.probe_accuracy for stage in stages]
    if any(a is None for a in accuracies):
        return stages[-1].index
    return stages[int(np.argmax(np.asarray(accuracies, dtype=float)))].index


def judge_similarity(stages: list[StageEvidence]) -> tuple[bool, list[str]]:
    """Similar to ImageNet or not (True: similar), with the sentences that say why.

    The last stage's BatchNorm drift decides, unless the probes disagree by more than their noise
    (PROBE_MARGIN): an earlier stage clearly better than the last says the late ImageNet features
    do not fit; the last stage clearly better than all earlier ones says they do.
    """
    last = stages[-1]
    measured = [stage.probe_accuracy for stage in stages]
    probes = [a for a in measured if a is not None]  # all of them, or the probes are not used
    gain = None  # how much better the last stage probes than the best earlier one
    if len(stages) > 1 and len(probes) == len(measured):
        gain = probes[-1] - max(probes[:-1])
    if last.bn_drift is None and gain is None:
        raise GraftError("advise could measure neither BatchNorm drift (this backbone has no BatchNorm in its last "
                         "stage) nor linear probes (some class has fewer than 2 training images): add images, or use "
                         "a CNN backbone such as tf_efficientnet_lite0.")
    reasons = []
    if gain is not None:
        earlier = max(range(len(stages) - 1), key=lambda i: probes[i])
        stage, accuracy = stages[earlier].index, probes[earlier]
        if gain > 0:
            reasons.append(f"Linear probes: the last stage ({probes[-1]:.0%}) beats every earlier stage, by "
                           f"{gain * 100:.0f} points over stage {stage} ({accuracy:.0%}).")
        elif gain == 0:
            reasons.append(f"Linear probes: stage {stage} already does as well as the last stage ({accuracy:.0%}).")
        else:
            reasons.append(f"Linear probes: stage {stage} ({accuracy:.0%}) beats the last stage ({probes[-1]:.0%}) "
                           f"by {-gain * 100:.0f} points.")
    if last.bn_drift is None:
        similar = gain is not None and gain > 0
        reasons.append("No BatchNorm statistics to compare, so the probes decide: "
                       + ("the deepest features are the best, as on ImageNet-like data." if similar
                          else "an earlier stage does as well as the last, as on data unlike ImageNet."))
        return similar, reasons
    similar = last.bn_drift < DRIFT_DIFFERENT
    reasons.insert(0,
        f"BatchNorm drift at the last stage is {last.bn_drift:.2f} ({'under' if similar else 'at least'} "
        f"{DRIFT_DIFFERENT:.2f}): its activations spread {'like' if similar else 'unlike'} ImageNet's."
    )
    if gain is not None and similar and gain <= -PROBE_MARGIN:
        similar = False
        reasons.append(f"The probes overrule the drift: an earlier stage beats the last by at least {PROBE_MARGIN * 100:.0f} points, "
                       "so the late ImageNet features do not fit this data.")
    elif gain is not None and not similar and gain >= PROBE_MARGIN:
        similar = True
        reasons.append(f"The probes overrule the drift: the last stage beats every earlier one by at least "
                       f"{PROBE_MARGIN * 100:.0f} points, so the late ImageNet features still fit this data.")
    return similar, reasons


def recommend(case: int, *, stages: list[StageEvidence], best: int, reasons: list[str], images_per_class: float,
              train_images: int) -> Advice:
    """The course's recipe for `case` as graft settings: strategy, cut, learning rates, and why (`recipe`);
    `reasons`, the evidence for the case, are kept as they are."""
    cut, ratio, alternatives = None, BACKBONE_LR_RATIO_SIMILAR, []
    if case == 1:
        strategy = "linear-probe"
        why = ("Small data similar to ImageNet: keep every pretrained weight frozen and train only a new head (too few "
               "images to retrain the base without overfitting); linear-probe picks its regularisation by cross-validation.")
        alternatives.append(f"feature-extract: the same frozen base, a head trained on augmented views at lr {HEAD_LR:g}.")
    elif case == 2:
        strategy, cut = "truncate", best
        why = (f"Small data unlike ImageNet: keep the frozen base only up to stage {best}, the stage whose features probe "
               "best, and train a head there (the late layers encode ImageNet's objects, and there are too few images "
               "to retrain them).")
        if best == stages[-1].index:
            alternatives.append("linear-probe: the last stage probes best, so the whole frozen network is as good a base.")
    elif case == 3:
        strategy = "finetune"
        why = (f"Large data similar to ImageNet: start from ImageNet weights and fine-tune everything, the base at {ratio:g} "
               "x the head's learning rate so that its good features are refined, not overwritten.")
        drifting = _late_drifting_stages(stages)
        named = "the last stage" if drifting == 1 else f"the last {drifting} stages"
        alternatives.append(f"partial --unfreeze {drifting}: train only {named} of the base (the late stages whose "
                            f"BatchNorm drift is at least {DRIFT_DIFFERENT:.2f}, and at least one); fewer weights to train.")
    else:
        strategy, ratio = "finetune", BACKBONE_LR_RATIO_DIFFERENT
        why = (f"Large data unlike ImageNet: fine-tune everything from ImageNet weights (faster than from random weights), "
               f"the base at {ratio:g} x the head's learning rate because its late features must change more.")
        alternatives.append("scratch: the same network from random weights, the baseline fine-tuning must beat.")
    recipe = [why]
    mentioned = {strategy, *(text.split(" ")[0].rstrip(":") for text in alternatives)}
    alternatives += [f"{plan.name}: {plan.summary}" for plan in strategies_for_case(case) if plan.name not in mentioned]
    if strategy != "linear-probe":  # a logistic regression has no learning rate
        recipe.append(f"Head learning rate {HEAD_LR:g}: graft's default for a new head trained with AdamW.")
    return Advice(
        case=case, size="large" if case in (3, 4) else "small", similarity="similar" if case in (1, 3) else "different",
        images_per_class=images_per_class, train_images=train_images, strategy=strategy, cut=cut, unfreeze=None, lr=HEAD_LR,
        backbone_lr_ratio=ratio, stages=stages, best_stage=best, reasons=list(reasons), alternatives=alternatives,
        recipe=recipe,
    )


def _late_drifting_stages(stages: list[StageEvidence]) -> int:
    """How many stages at the end drift at least DRIFT_DIFFERENT (at least 1): what partial should train."""
    count = 0
    for stage in reversed(stages):
        if stage.bn_drift is None or stage.bn_drift < DRIFT_DIFFERENT:
            break
        count += 1
    return max(1, count)


def _check_options(*, sample_per_class: int, weights: str, large_per_class: float = LARGE_PER_CLASS) -> None:
    if not isinstance(sample_per_class, int) or sample_per_class < 2:
        raise GraftError(f"--sample-per-class {sample_per_class}: use at least 2 images per class (a probe needs two to "
                         f"cross-validate); {SAMPLE_PER_CLASS} is the default.")
    if weights == "none":
        raise GraftError("--weights none: advise compares the data with what the backbone was pretrained on, and random "
                         "weights were trained on nothing; use --weights imagenet (or a pretrained weights file).")
    if large_per_class <= 0:
        raise GraftError(f"--large-per-class {large_per_class}: must be greater than 0 (the default is {LARGE_PER_CLASS}).")


def _cut_search(splits, *, backbone, weights, img_size, sample_per_class, seed, runtime: Runtime):
    """The evidence rows and how many images they came from."""
    from ..backbones import create_backbone, stage_infos
    from .measure import measure_activations, probe_accuracy, stratified_sample

    net = create_backbone(backbone, weights=weights, img_size=img_size)
    sample = stratified_sample(splits.train, sample_per_class, seed=seed)
    seen = measure_activations(net, sample, runtime=runtime)
    rows = []
    for stage, features in zip(stage_infos(net), seen.stage_features):
        drifts = [drift for layer, drift in seen.layer_drift.items() if seen.layer_stage[layer] == stage.index]
        rows.append(StageEvidence(
            index=stage.index,
            channels=stage.channels or features.shape[1],
            bn_drift=float(np.mean(drifts)) if drifts else None,
            probe_accuracy=probe_accuracy(features, seen.labels, alphas=PROBE_ALPHAS),
        ))
    return rows, len(sample)
