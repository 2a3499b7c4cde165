"""Accuracy, per-class precision/recall/F1 and the confusion matrix, computed by scikit-learn."""

from .metrics import Evaluation, evaluate_predictions

__all__ = ["Evaluation", "evaluate_predictions"]
