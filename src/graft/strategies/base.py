"""The strategy contract and its registry: what a strategy decides, and how graft finds it.

Every strategy trains in at most two phases, like Lightning's BaseFinetuning:
1. head phase: the backbone is frozen, so its features are computed once (and cached) and only the
   new head is trained on them: a logistic regression (`head_phase = "logreg"`) or AdamW over
   cached augmented views (`"sgd"`). `None`: no frozen phase.
2. image phase (`image_phase = True`): the backbone parameters `trainable()` names (plus the head)
   train on images, the backbone's at `backbone_lr_ratio()` x the head's learning rate.

The pipeline asks the strategy each of these questions and reads no flag of its own, so a new
strategy is one registered class: `graft train`, `graft compare`, `graft advise`, `graft
strategies` and the report pick it up with no other edit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from ..errors import GraftError

if TYPE_CHECKING:  # type names only: importing the strategies must stay cheap for the CLI
    from ..backbones import Backbone
    from ..config import AugmentOptions, OptimOptions, StrategyOptions, TrainConfig

HeadPhase = Literal["logreg", "sgd"]


class Strategy:
    name: ClassVar[str]
    summary: ClassVar[str]  # one line: what trains
    case: ClassVar[str]  # which of the course's four cases it serves, in words
    cases: ClassVar[tuple[int, ...]] = ()  # those cases by number (1-4): `graft advise` offers it there
    pretrained: ClassVar[bool] = True  # start from ImageNet weights (False: random init)
    head_phase: ClassVar[HeadPhase | None] = "sgd"
    image_phase: ClassVar[bool] = False  # train (part of) the backbone on images after the head phase
    augment_images: ClassVar[bool] = True  # the image phase sees augmented images
    # Before the image phase, replace the head-phase head (a probe) by a new head trained on augmented
    # views, and keep the probe only where it beats the best image epoch on val by more than the noise
    # (probe-finetune; graft.advise.auto.keep_probe_or_tuned).
    fresh_head_for_images: ClassVar[bool] = False

    def cut(self, options: StrategyOptions) -> int | None:
        """Stage after which to cut the backbone (None keeps all of it)."""
        return None

    def trainable(self, backbone: Backbone, options: StrategyOptions) -> list[str]:
        """Backbone parameters the image phase trains: all of them unless a strategy says otherwise."""
        return [name for stage in backbone.stage_params for name in stage]

    def backbone_lr_ratio(self, optim: OptimOptions) -> float:
        """The backbone's learning rate as a fraction of the head's in the image phase.

        Pretrained weights move slowly (--backbone-lr-ratio); random weights need the full rate.
        """
        return optim.backbone_lr_ratio if self.pretrained else 1.0

    def head_views(self, augment: AugmentOptions) -> list[int | None]:
        """Which cached views of the training images the head phase trains on: view None is the
        plain (unaugmented) image, views 0..N-1 are seeded augmented ones."""
        if self.head_phase == "logreg" or not augment.augment:
            return [None]
        return list(range(augment.views))

    @property
    def main_phase(self) -> Literal["head", "images"] | None:
        """The phase whose epochs `graft compare` counts: images where they train, else the head's
        epochs, else None (one logistic-regression fit has no epochs)."""
        if self.image_phase:
            return "images"
        return "head" if self.head_phase == "sgd" else None

    def check(self, config: TrainConfig) -> None:
        """Refuse option combinations this strategy cannot honour, before any work starts."""
        if self.head_phase is None and self.main_phase is None:
            raise GraftError(f"Strategy {self.name!r} has neither a head phase nor an image phase: nothing would train.")


STRATEGIES: dict[str, Strategy] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: add a strategy to the registry under its `name` (names are unique)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name == "auto":
        raise TypeError(f"{cls.__name__}: a strategy needs a `name` other than 'auto'.")
    if name in STRATEGIES:
        raise TypeError(f"{cls.__name__}: a strategy named {name!r} is already registered "
                        f"({type(STRATEGIES[name]).__name__}).")
    for attribute in ("summary", "case"):
        if not isinstance(getattr(cls, attribute, None), str):
            raise TypeError(f"{cls.__name__}: a strategy needs a `{attribute}` sentence.")
    STRATEGIES[name] = cls()
    return cls


def unregister(name: str) -> None:
    STRATEGIES.pop(name, None)


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise GraftError(f"Unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}.") from None


def strategies_for_case(case: int) -> list[Strategy]:
    """The registered strategies that serve one of the course's four cases."""
    return [plan for plan in STRATEGIES.values() if case in plan.cases]
