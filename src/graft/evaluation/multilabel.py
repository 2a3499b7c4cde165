"""Multi-label metrics: mean average precision, and per-class precision, recall and F1 at each class's
threshold, computed by scikit-learn from targets (N x C, 0/1) and probabilities (N x C, sigmoids).

Edge cases, as defined here:

- A class with no positive image among those evaluated has no average precision (scikit-learn
  gives 0 and a warning): its AP is None, it is listed in `no_positive`, and it is left out of the
  macro means (AP and F1), which average the classes with at least one positive. Its precision is
  still counted (its false positives lower it), and the micro figures pool every class.
- An image with no label counts as an exact match when it is given no class either; `unlabelled`
  counts such images.
- Without any positive at all, the mAPs are None.

scikit-learn is imported when predictions are evaluated, not with this module: a
`MultiLabelEvaluation` is read by the report, the CLI and saved models that never compute one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .metrics import Evaluation
from .thresholds import Thresholds, decide

TASK = "multilabel"  # what MultiLabelEvaluation.to_dict writes under "task"


@dataclass
class MultiLabelEvaluation:
    """Everything measured on one split of multi-label data. `map_macro` is the primary figure, as
    `accuracy` is for single-label data: what early stopping, auto and compare rank by."""

    classes: list[str]
    map_macro: float | None  # mean of the per-class APs over classes with a positive; None without any
    map_micro: float | None  # the AP of every (image, class) pair pooled; None without a positive
    per_class: dict[str, dict]  # class -> ap (None without a positive), precision, recall, f1, support, predicted, threshold
    micro: dict[str, float]  # precision, recall, f1 over every (image, class) pair at the thresholds
    exact_match: float  # images whose predicted set of classes is exactly their set
    hamming_loss: float  # the share of (image, class) pairs decided wrongly
    cardinality: float  # labels per image
    predicted_cardinality: float  # classes given per image
    count: int  # images
    unlabelled: int  # images with no label

    @property
    def no_positive(self) -> list[str]:
        """The classes with no positive image here: AP undefined, left out of the macro means."""
        return [name for name, row in self.per_class.items() if row["support"] == 0]

    @property
    def macro_f1(self) -> float | None:
        """The mean F1 at the thresholds over the classes with a positive (those of `map_macro`)."""
        scores = [row["f1"] for row in self.per_class.values() if row["support"] > 0]
        return float(np.mean(scores)) if scores else None

    def summary(self) -> str:
        """One line: the mAPs, exact match, Hamming loss, labels per image and what was left out."""
        left_out = self.no_positive
        note = (f"; AP undefined for {', '.join(left_out)} (no positive image), left out of the macro means"
                if left_out else "")
        return (f"mAP {_number(self.map_macro)} macro, {_number(self.map_micro)} micro; exact match "
                f"{self.exact_match:.1%}; Hamming loss {self.hamming_loss:.3f}; labels per image "
                f"{self.predicted_cardinality:.2f} predicted, {self.cardinality:.2f} true; {self.count} images{note}")

    def table(self) -> tuple[list[str], list[list[str]]]:
        """The per-class table as text, for the report and the CLI: headers, then one row per class, the
        macro average and the micro average ("n/a" where a figure is undefined)."""
        headers = ["class", "AP", "precision", "recall", "F1", "threshold", "images", "predicted"]
        rows = [[name, _number(row["ap"]), f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                 f"{row['threshold']:.3f}", str(row["support"]), str(row["predicted"])]
                for name, row in self.per_class.items()]
        rows.append(["macro average", _number(self.map_macro), "", "", _number(self.macro_f1), "",
                     str(sum(row["support"] for row in self.per_class.values())), ""])
        rows.append(["micro average", _number(self.map_micro), f"{self.micro['precision']:.3f}",
                     f"{self.micro['recall']:.3f}", f"{self.micro['f1']:.3f}", "", "",
                     str(sum(row["predicted"] for row in self.per_class.values()))])
        return headers, rows

    def to_dict(self) -> dict:
        return {"task": TASK, **asdict(self), "macro_f1": self.macro_f1, "no_positive": self.no_positive}

    @classmethod
    def from_dict(cls, data: dict) -> MultiLabelEvaluation:
        """What `to_dict` wrote (task, macro_f1 and no_positive are derived, so they are not read back)."""
        return cls(**{key: value for key, value in data.items() if key not in ("task", "macro_f1", "no_positive")})


def evaluation_from_dict(data: dict) -> Evaluation | MultiLabelEvaluation:
    """An `Evaluation` or a `MultiLabelEvaluation`, whichever wrote `data` (to_dict)."""
    return MultiLabelEvaluation.from_dict(data) if data.get("task") == TASK else Evaluation.from_dict(data)


def evaluate_multilabel(targets, probabilities, *, classes: list[str],
                        thresholds: Thresholds | list[float] | np.ndarray) -> MultiLabelEvaluation:
    """Measure `probabilities` (N x C sigmoid outputs) against `targets` (N x C, 0/1), deciding each
    class at its threshold (`decide`: probability >= threshold)."""
    from sklearn.metrics import accuracy_score, average_precision_score, hamming_loss, precision_recall_fscore_support

    from .thresholds import _checked

    targets, probabilities = _checked(targets, probabilities, classes)
    values = thresholds.array() if isinstance(thresholds, Thresholds) else np.asarray(thresholds, dtype=np.float64)
    if values.shape != (len(classes),):
        raise ValueError(f"{values.size} thresholds for {len(classes)} classes")
    predicted = decide(probabilities, values).astype(np.int64)
    support = targets.sum(axis=0)
    present = np.flatnonzero(support > 0)
    ap: list[float | None] = [None] * len(classes)
    if present.size:
        for column, score in zip(present, np.atleast_1d(average_precision_score(
                targets[:, present], probabilities[:, present], average=None))):
            ap[column] = float(score)
    count = len(targets)
    if count:
        precision, recall, f1, _ = precision_recall_fscore_support(targets, predicted, average=None, zero_division=0)
        micro = precision_recall_fscore_support(targets, predicted, average="micro", zero_division=0)[:3]
    else:
        precision = recall = f1 = np.zeros(len(classes))
        micro = (0.0, 0.0, 0.0)
    return MultiLabelEvaluation(
        classes=list(classes),
        map_macro=float(np.mean([ap[column] for column in present])) if present.size else None,
        map_micro=float(average_precision_score(targets, probabilities, average="micro")) if present.size else None,
        per_class={name: {"ap": ap[column], "precision": float(precision[column]), "recall": float(recall[column]),
                          "f1": float(f1[column]), "support": int(support[column]),
                          "predicted": int(predicted[:, column].sum()), "threshold": float(values[column])}
                   for column, name in enumerate(classes)},
        micro=dict(zip(("precision", "recall", "f1"), map(float, micro))),
        exact_match=float(accuracy_score(targets, predicted)) if count else 0.0,
        hamming_loss=float(hamming_loss(targets, predicted)) if count else 0.0,
        cardinality=float(targets.sum(axis=1).mean()) if count else 0.0,
        predicted_cardinality=float(predicted.sum(axis=1).mean()) if count else 0.0,
        count=int(count),
        unlabelled=int((targets.sum(axis=1) == 0).sum()),
    )


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
