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
    """A linear probe first, then graft's finetune recipe, keeping the fine-tuned model unless the probe
    is clearly better on val: what `--strategy auto` runs on data large enough to fine-tune.

    The probe is the cheap first answer and the fallback. Fine-tuning does not start from the probe's
    head (LP-FT): where the probe already fits the training images (flowers-dev: 400 photos, 1,280
    features), fine-tuning from it had nothing to learn and only drifted: val fell from the probe's
    93% to 83% after one epoch and never passed 91% in 15 (lr 1e-3, base 1e-4), nor 92% with a
    ten times smaller rate; graft's finetune (a head trained on augmented views, then everything)
    reached 94% val in 5 epochs (benchmarks/auto_calibrate.py, docs/advise.md).
    """

    name = "probe-finetune"
    summary = ("A linear probe first; then a head on augmented views and everything fine-tuned, as finetune does; "
               "the fine-tuned model is kept unless the probe beats it on val by more than the noise.")
    case = "large data: what --strategy auto fine-tunes with"
    cases = (3, 4)
    head_phase = "logreg"
    image_phase = True
    fresh_head_for_images = True

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
