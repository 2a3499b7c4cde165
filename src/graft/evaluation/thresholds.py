"""Per-class decision thresholds for multi-label models: which probabilities count as "has the class".

A multi-label model gives each class its own probability (a sigmoid), and an image is given every
class whose probability reaches that class's threshold (`decide`: probability >= threshold). One
threshold of 0.5 for every class serves rare and common classes badly, so each class's is chosen on
the validation images (`choose_thresholds`): the one that maximises that class's F1 there.

The floor: a class's threshold is never below p / (1 + p), p being its share of the val images.
For calibrated probabilities the threshold that maximises F1 is half the best F1 reachable (Lipton,
Elkan and Naryanaswamy, "Optimal Thresholding of Classifiers to Maximize F1 Measure", ECML PKDD
2014), and giving the class to every image already reaches an F1 of 2p / (1 + p): so the best
threshold is never below p / (1 + p), and a lower one found on val is noise (or probabilities that
are not calibrated). It binds mostly where a class has few positives in val; on tags-dev's probe it
also raised one common class's threshold (roses, 67 of 200 val images) from 0.22 to 0.25, and the
test F1 did not suffer. A class with no positive in val keeps 0.5, where the model says the class
is likelier present than not: there is nothing to choose on.

Not falling back to 0.5 for classes with a few positives was measured: on tags-dev's Lite0 features,
a class made rare in every split (a few % of the images), fitted by the linear probe without class
weights, scored a lower F1 on test at 0.5 than at the threshold chosen on val with one to four
positives there (the probe's probabilities for a rare class are low, so 0.5 misses most of it),
and about the same with balanced class weights (`python -m benchmarks.calibration.multilabel_probe`;
the figures are in its docstring).

scikit-learn is imported where thresholds are chosen; `Thresholds` itself (saved with the model and
read by every predictor) needs numpy only.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ..errors import GraftError

DEFAULT_THRESHOLD = 0.5  # a class without a positive in val

# How a class's threshold was set (Thresholds.rules).
BEST_F1 = "best-f1"  # the threshold maximising the class's F1 on val
FLOOR = "floor"  # the best-F1 threshold was under the floor, p / (1 + p): the floor
NO_POSITIVE = "no-positive"  # no positive in val: DEFAULT_THRESHOLD
GIVEN = "given"  # one threshold for every class, given by the user (--threshold)


@dataclass(frozen=True)
class Thresholds:
    """Each class's threshold and, for the record, how it was set and what it scored on val.

    `rules[i]` is BEST_F1, FLOOR, NO_POSITIVE or GIVEN; `positives[i]` the positive images of class i
    among the `images` it was chosen on; `f1[i]` the class's F1 on those images at its threshold (0
    for a class without positives there).
    """

    classes: list[str]
    values: list[float]
    rules: list[str]
    positives: list[int]
    f1: list[float]
    images: int

    def __post_init__(self) -> None:
        if not len(self.classes) == len(self.values) == len(self.rules) == len(self.positives) == len(self.f1):
            raise ValueError("Thresholds needs one value, rule, count and F1 per class")

    def array(self) -> np.ndarray:
        """The thresholds in class order (float64, C)."""
        return np.asarray(self.values, dtype=np.float64)

    def describe(self) -> list[str]:
        """One line per class: its threshold and why."""
        width = max(map(len, self.classes), default=0)
        return [f"{name:<{width}}  {value:.3f}  {self._reason(index)}" for index, (name, value)
                in enumerate(zip(self.classes, self.values))]

    def to_dict(self) -> dict:
        return {"images": self.images,
                "per_class": {name: {"threshold": value, "rule": rule, "positives": positives, "f1": f1}
                              for name, value, rule, positives, f1 in zip(self.classes, self.values, self.rules,
                                                                          self.positives, self.f1)}}

    @classmethod
    def from_dict(cls, data: dict) -> Thresholds:
        """What `to_dict` wrote."""
        rows = data["per_class"]
        return cls(classes=list(rows), values=[float(row["threshold"]) for row in rows.values()],
                   rules=[row["rule"] for row in rows.values()], positives=[int(row["positives"]) for row in rows.values()],
                   f1=[float(row["f1"]) for row in rows.values()], images=int(data["images"]))

    def _reason(self, index: int) -> str:
        rule, positives, f1 = self.rules[index], self.positives[index], self.f1[index]
        if rule == GIVEN:
            return "given for every class (--threshold)"
        if rule == NO_POSITIVE:
            return f"{DEFAULT_THRESHOLD} (no positive among the {self.images} val images: nothing to choose on)"
        seen = f"F1 {f1:.3f}, {positives} of {self.images} val images positive"
        if rule == FLOOR:
            return f"the floor p / (1 + p), p its share of val, above the best-F1 threshold ({seen})"
        return f"best F1 on val ({seen})"


def sigmoid(logits) -> np.ndarray:
    """Each class's probability from a multi-label model's logits (float64): the one conversion every
    numpy caller uses (training's evaluation, the report, the export's parity check)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def decide(probabilities, thresholds) -> np.ndarray:
    """Which classes each image is given: `probabilities` (N x C, or C for one image) >= each class's
    threshold (`thresholds`: a `Thresholds` or C numbers). The one rule every multi-label answer follows."""
    values = thresholds.array() if isinstance(thresholds, Thresholds) else np.asarray(thresholds, dtype=np.float64)
    return np.asarray(probabilities) >= values


def check_threshold(value: float) -> float:
    """A threshold given by the user, checked: a GraftError naming it unless 0 < value < 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise GraftError(f"--threshold {value} is not a probability strictly between 0 and 1; give one such as 0.5 "
                         "(an image gets every class whose probability reaches it), or leave it out to choose "
                         "each class's threshold on val.")
    return float(value)


def choose_thresholds(targets, probabilities, *, classes: list[str], threshold: float | None = None) -> Thresholds:
    """Each class's threshold, chosen on the images of `targets` (N x C, 0/1) and `probabilities`
    (N x C, the model's sigmoid outputs on the same images: val).

    `threshold` given (--threshold): that one for every class. Otherwise, for a class with a positive
    image, `best_f1_threshold`, raised to the floor p / (1 + p) where it is lower (p: the class's share
    of the images; the module's docstring says why); for a class without one, DEFAULT_THRESHOLD.
    """
    targets, probabilities = _checked(targets, probabilities, classes)
    if threshold is not None:
        threshold = check_threshold(threshold)
    values, rules = [], []
    for truth, scores in zip(targets.T, probabilities.T):
        if threshold is not None:
            value, rule = threshold, GIVEN
        elif not truth.any():
            value, rule = DEFAULT_THRESHOLD, NO_POSITIVE
        else:
            share = truth.mean()
            value, rule = best_f1_threshold(truth, scores), BEST_F1
            if value < share / (1 + share):
                value, rule = float(share / (1 + share)), FLOOR
        values.append(value)
        rules.append(rule)
    f1 = _f1(targets, decide(probabilities, values))
    return Thresholds(classes=list(classes), values=values, rules=rules,
                      positives=[int(count) for count in targets.sum(axis=0)], f1=[float(value) for value in f1],
                      images=len(targets))


def best_f1_threshold(truth: np.ndarray, scores: np.ndarray) -> float:
    """The threshold maximising the F1 of `scores >= threshold` against `truth` (0/1, with a 1): among
    the scores, the one at which the F1 is best (ties: the highest), moved down to halfway to the next
    lower score (0 below the lowest), so that the same images are given the class and the boundary
    falls in the gap rather than on an image."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, candidates = precision_recall_curve(truth, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    best = np.flatnonzero(np.isclose(f1, f1.max(), rtol=1e-12, atol=0))[-1]
    reached = float(candidates[best])
    below = scores[scores < reached]
    lower = float(below.max()) if below.size else 0.0
    middle = (lower + reached) / 2
    return middle if lower < middle < reached else reached


def _f1(targets: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Each class's F1 (0 where it has neither positives nor predictions), without scikit-learn's warnings."""
    true_positives = (targets.astype(bool) & predicted).sum(axis=0)
    denominator = targets.sum(axis=0) + predicted.sum(axis=0)
    return np.where(denominator > 0, 2 * true_positives / np.maximum(denominator, 1), 0.0)


def _checked(targets, probabilities, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """`targets` and `probabilities` as arrays of one shape, N x len(classes); a ValueError otherwise."""
    targets, probabilities = np.asarray(targets), np.asarray(probabilities, dtype=np.float64)
    if targets.ndim != 2 or targets.shape != probabilities.shape or targets.shape[1] != len(classes):
        raise ValueError(f"targets {targets.shape} and probabilities {probabilities.shape} must both be "
                         f"images x {len(classes)} classes")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("targets must be 0 or 1")
    return targets.astype(np.int64), probabilities
