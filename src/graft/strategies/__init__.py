"""How much of the pretrained network to train: one small registered object per strategy.

The course's four cases map onto these (small/large data x similar/different from ImageNet):
- small, similar   -> linear-probe or feature-extract (freeze everything, train a new head)
- small, different -> truncate (cut the network at an earlier stage, train a head there)
- large, similar   -> finetune or partial (start from ImageNet, train the base slowly)
- large, different -> finetune, or scratch as the baseline it must beat

Every strategy trains in at most two phases, like Lightning's BaseFinetuning:
1. head phase: the backbone is frozen, so its features are computed once (and cached) and only the
   new head is trained on them: logistic regression (`linear-probe`) or SGD over augmented views.
2. image phase: the parameters `trainable()` names (plus the head) train on images, the backbone's at
   a fraction of the head's learning rate. Strategies without a second phase return None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..backbones import Backbone
from ..errors import GraftError


@dataclass(frozen=True)
class StrategyOptions:
    """The knobs that strategies read. Every one is also a keyword of graft.train and a CLI flag."""

    unfreeze: int = 2  # partial: how many of the last stages train
    cut: int = -2  # truncate: keep stages 0..cut (negative counts from the end, as in Python)


class Strategy:
    name: ClassVar[str]
    summary: ClassVar[str]
    case: ClassVar[str]  # which of the course's four cases it serves
    pretrained: ClassVar[bool] = True  # start from ImageNet weights (False: random init)
    head_phase: ClassVar[str | None] = "sgd"  # "logreg", "sgd", or None (no frozen phase)
    augment: ClassVar[bool] = True

    def cut(self, options: StrategyOptions) -> int | None:
        """Stage after which to cut the backbone (None keeps all of it)."""
        return None

    def trainable(self, backbone: Backbone, options: StrategyOptions) -> list[str] | None:
        """Backbone parameters to train on images after the head phase; None: no image phase."""
        return None


STRATEGIES: dict[str, Strategy] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    STRATEGIES[cls.name] = cls()
    return cls


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise GraftError(f"Unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}.") from None


@register
class LinearProbe(Strategy):
    name = "linear-probe"
    summary = "Frozen backbone; features once; logistic-regression head (no augmentation)."
    case = "small data, similar to ImageNet"
    head_phase = "logreg"
    augment = False


@register
class FeatureExtract(Strategy):
    name = "feature-extract"
    summary = "Frozen backbone (BatchNorm in eval mode); new head trained with augmentation."
    case = "small data, similar to ImageNet"


@register
class Finetune(Strategy):
    name = "finetune"
    summary = "Head first on the frozen base, then everything with a smaller learning rate for the base."
    case = "large data, similar to ImageNet"

    def trainable(self, backbone, options):
        return [name for stage in backbone.stage_params for name in stage]


@register
class Partial(Strategy):
    name = "partial"
    summary = "Like finetune, but only the last N stages of the base train (--unfreeze N)."
    case = "medium data, similar to ImageNet"

    def trainable(self, backbone, options):
        return backbone.last_stages(options.unfreeze)


@register
class Truncate(Strategy):
    name = "truncate"
    summary = "Cut the base after stage K (--cut K), frozen; train a head on those earlier features."
    case = "small data, different from ImageNet"

    def cut(self, options):
        return options.cut


@register
class Scratch(Strategy):
    name = "scratch"
    summary = "Same architecture, random initialisation, everything trained: the baseline."
    case = "large data, different from ImageNet (baseline)"
    pretrained = False
    head_phase = None

    def trainable(self, backbone, options):
        return [name for stage in backbone.stage_params for name in stage]
