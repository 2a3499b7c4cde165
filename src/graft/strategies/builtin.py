"""graft's six strategies. The course's four cases map onto them (small/large data x similar/different
from ImageNet):
- small, similar   -> linear-probe or feature-extract (freeze everything, train a new head)
- small, different -> truncate (cut the network at an earlier stage, train a head there)
- large, similar   -> finetune or partial (start from ImageNet, train the base slowly)
- large, different -> finetune, or scratch as the baseline it must beat
"""

from __future__ import annotations

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
    """LP-FT (Kumar et al., 2022: fine-tuning from a linear probe distorts pretrained features less than
    from a random head). graft's auto runs it where fine-tuning is worth trying: the probe is the
    cheap first answer, and the image phase keeps an epoch only where it beats the probe on val."""

    name = "probe-finetune"
    summary = "A linear probe first (logistic regression on cached features), then everything fine-tuned from it; image epochs kept only where they beat the probe."
    case = "large data: what --strategy auto fine-tunes with"
    cases = (3, 4)
    head_phase = "logreg"
    image_phase = True

    def check(self, config):
        if config.strategy.hidden is not None:
            raise GraftError("probe-finetune starts from a logistic regression, a linear head: leave out --hidden.")


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
