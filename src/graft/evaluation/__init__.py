"""Accuracy, per-class precision/recall/F1 and the confusion matrix (single-label data); mean average
precision, per-class metrics at per-class thresholds and the thresholds' choice (multi-label data);
computed by scikit-learn."""

from .metrics import Evaluation, evaluate_predictions
from .multilabel import MultiLabelEvaluation, evaluate_multilabel, evaluation_from_dict
from .thresholds import Thresholds, choose_thresholds, decide, sigmoid

__all__ = ["Evaluation", "MultiLabelEvaluation", "Thresholds", "choose_thresholds", "decide", "evaluate_multilabel",
           "evaluate_predictions", "evaluation_from_dict", "sigmoid"]
