"""The strategy contract and its registry: what a strategy decides, and how graft finds it.

Every strategy trains in at most two phases, like Lightning's BaseFinetuning:
1. head phase: the backbone is frozen, so its features are computed once (and cached) and only the
   new head is trained on them: a logistic regression (`head_phase = "logreg"`) or AdamW over
   cached augmented views (`"sgd"`). `None`: no frozen phase.
2. image phase (`image_phase = True`): the backbone parameters `trainable()` names (plus the head)
   train on images, the backbone's at `backbone_lr_ratio()` x the head's learning rate.

The run loop (graft.training.pipeline) does the shared mechanics and asks the strategy everything
else: the declarations above, and two hooks around the image phase, `before_images` and
`after_images`, which act on the run through `RunState` (the run's state, as graft.training
holds it), as BaseFinetuning's hooks act on a LightningModule. The loop reads no flag of its own
and names no strategy, so a new strategy is one registered class: `graft train`, `graft compare`,
`graft advise`, `graft strategies` and the report pick it up with no other edit.

This package imports nothing of graft's but graft.config and graft.errors (graft.config imports no
strategy), so every other part of graft may import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from ..config import AUTO
from ..errors import GraftError

if TYPE_CHECKING:  # type names only: importing the strategies must stay cheap for the CLI
    from ..backbones import Backbone
    from ..config import AugmentOptions, OptimOptions, StrategyOptions, TrainConfig
    from ..model import GraftModel

HeadPhase = Literal["logreg", "sgd"]


class RunState(Protocol):
    """What a strategy's hooks may read and do in a run (graft.training.state.Run meets it)."""

    config: TrainConfig
    model: GraftModel
    auto: bool  # --strategy auto chose this strategy, so auto's decisions apply
    head_score: float | None  # val accuracy after the head phase (None: no head phase)
    trail: dict[str, Any]  # what auto decided and why: kept in graft.json
    scratch: dict[str, Any]  # the strategy's own values for this run (strategies are shared instances)

    @property
    def multilabel(self) -> bool:
        """Several labels per image: an image is right when all its labels are (exact match)."""
        ...

    def say(self, message: str) -> None: ...

    def finetune_epochs(self) -> int:
        """Under auto: the image epochs worth running and fitting in --budget (0: none), said and kept."""
        ...

    def skip_images(self, *, recorded_as: str) -> None:
        """No image phase after all: the run is, and is recorded as, strategy `recorded_as`."""
        ...

    def fresh_head(self) -> None:
        """Put back the new head as the run made it, before any training."""
        ...

    def train_head(self, views: list[int | None]) -> None:
        """Train the head by AdamW on the cached features of these views (see Strategy.head_views)."""
        ...

    def val_right(self, *, head_phase: bool = False) -> Any:
        """Which val images the model gets right now (a boolean array); `head_phase`: as the head
        phase left it."""
        ...


class Strategy:
    name: ClassVar[str]
    summary: ClassVar[str]  # one line: what trains
    case: ClassVar[str]  # which of the course's four cases it serves, in words
    cases: ClassVar[tuple[int, ...]] = ()  # those cases by number (1-4): `graft advise` offers it there
    pretrained: ClassVar[bool] = True  # start from ImageNet weights (False: random init)
    head_phase: ClassVar[HeadPhase | None] = "sgd"
    image_phase: ClassVar[bool] = False  # train (part of) the backbone on images after the head phase
    augment_images: ClassVar[bool] = True  # the image phase sees augmented images

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

    def before_images(self, run: RunState) -> None:
        """Called after the head phase, before the image phase (which `run.skip_images` cancels)."""

    def image_baseline(self, run: RunState) -> float | None:
        """The val accuracy an image epoch must beat to be kept: the head phase's model stays where
        fine-tuning only makes it worse. None: every epoch counts (the best is kept)."""
        return run.head_score

    def image_callbacks(self, run: RunState) -> list:
        """Lightning callbacks the image phase's fit runs besides graft's own (probe-finetune: stop
        fine-tuning that cannot catch the probe)."""
        return []

    def after_images(self, run: RunState, best_epoch: int | None) -> None:
        """Called after the image phase, the model holding its best epoch (`best_epoch`, from 0;
        None where no epoch beat `image_baseline`)."""

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
    if not isinstance(name, str) or not name or name == AUTO:
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
        raise GraftError(f"--strategy {name!r}: choose {AUTO} or one of {', '.join(STRATEGIES)} "
                         "(`graft strategies` says what each does).") from None


def strategies_for_case(case: int) -> list[Strategy]:
    """The registered strategies that serve one of the course's four cases."""
    return [plan for plan in STRATEGIES.values() if case in plan.cases]
