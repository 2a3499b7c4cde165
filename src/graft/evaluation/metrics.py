"""Accuracy, per-class precision/recall/F1 and the confusion matrix, computed by scikit-learn.

scikit-learn is imported when predictions are evaluated, not with this module: `Evaluation` is
read by the report, the CLI and saved models that never compute one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Evaluation:
    classes: list[str]
    accuracy: float
    per_class: dict[str, dict[str, float]]  # class -> precision, recall, f1, support
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    count: int

    @property
    def macro_f1(self) -> float:
        return float(np.mean([row["f1"] for row in self.per_class.values()]))

    def to_dict(self) -> dict:
        return {**asdict(self), "macro_f1": self.macro_f1}

    @classmethod
    def from_dict(cls, data: dict) -> Evaluation:
        """What `to_dict` wrote (macro_f1 is derived, so it is not read back)."""
        return cls(**{key: value for key, value in data.items() if key != "macro_f1"})


def evaluate_predictions(y_true, y_pred, classes: list[str]) -> Evaluation:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return Evaluation(
        classes=list(classes),
        accuracy=float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        per_class={
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support)
        },
        confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        count=int(len(y_true)),
    )
