"""What a finished run's own figures say went wrong, in words: a training that diverged (the loss blown
up, not to NaN, which stops a run at once, but to huge finite values: `--lr 1e9`), or a model no
better than answering the most common class. The CLI prints these after training (a divergence is
an error, exit 1; a model at chance a warning) and the report shows them at its top.

Torch-free: it reads graft.record's RunMetrics and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..evaluation import Evaluation

if TYPE_CHECKING:
    from ..record import RunMetrics

# A training epoch whose mean cross-entropy is this many times that of a uniform guess (ln of the
# number of classes) was trained by blown-up weights: a fresh head starts near 1x and falls from
# there, and overfitting raises the val loss, never the train loss, so far.
DIVERGED_LOSS_FACTOR = 10.0


@dataclass(frozen=True)
class Problem:
    kind: str  # "diverged" (an error: the training failed) or "chance" (a warning: no better than chance)
    message: str

    @property
    def is_error(self) -> bool:
        return self.kind == "diverged"


def training_problems(metrics: RunMetrics, classes: list[str], *, lr: float | None = None) -> list[Problem]:
    """The problems a run's figures show (none for a run that learnt): a divergence, judged from each
    phase's training loss, and a val accuracy no better than answering the most common val class.
    `lr`: the run's --lr, named in the advice."""
    problems = []
    uniform = math.log(max(2, len(classes)))
    losses = [(row.train_loss, row) for row in metrics.history
              if row.train_loss is not None and math.isfinite(row.train_loss)]
    loss, worst = max(losses, key=lambda pair: pair[0], default=(0.0, None))
    if worst is not None and loss > DIVERGED_LOSS_FACTOR * uniform:
        rate = f" (--lr {lr:g})" if lr is not None else ""
        problems.append(Problem("diverged", (
            f"Training diverged: the training loss reached {loss:.3g} in {worst.phase} epoch {worst.epoch}, "
            f"where guessing every class equally scores {uniform:.2f}. The weights were blown up, most likely by too "
            f"high a learning rate{rate}. The model was saved, but do not use it: train again with a lower --lr "
            "(the default is 0.001).")))
    val = metrics.val
    supports = {name: row["support"] for name, row in val.per_class.items()}
    if isinstance(val, Evaluation) and val.count and len(supports) > 1:  # (multi-label: no single answer to compare)
        common, most = max(supports.items(), key=lambda item: item[1])
        baseline = most / val.count
        if val.accuracy <= baseline:
            problems.append(Problem("chance", (
                f"The model is no better than chance: its val accuracy, {val.accuracy:.1%}, is what answering "
                f"'{common}' for every image scores ({most} of {val.count} val images)."
                + ("" if problems else " Check the labels and the data (graft audit DATA), or train longer "
                                       "or with another --strategy."))))
    return problems
