"""The course's "bottleneck features + linear classifier": a logistic regression, folded into a Linear head.

The fit is a pure function of the cached training features, the regularisation grid and the seed,
so its result is stored inside the features' cache entry: a second identical linear-probe run
loads it instead of fitting again (and `graft cache rm` removes both together).
"""

from __future__ import annotations

import warnings
from importlib.metadata import version

import numpy as np
import torch
from torch import nn

from ..features import FeatureSet
from ..features.derived import load_derived, store_derived
from . import final_linear

LOGREG_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def fit_logistic_head(head: nn.Module, features: FeatureSet, *, C: float | None, seed: int,
                      balanced: bool = False) -> float:
    """Set `head`'s last Linear layer to a logistic regression fitted on `features`; return the C used.

    Features are standardised for a well-conditioned fit; the scaling is then folded into the
    weights (w / sigma, b - w.mu / sigma), so the saved head takes raw features like any other.
    The regularisation C matters (on CIFAR-10 with Lite0, C=1 gave 75% where 0.003 gave 78%), so
    unless given it is chosen by stratified k-fold cross-validation on the training features only.
    `balanced`: weight each class inversely to its number of images (scikit-learn's class_weight="balanced").
    """
    arrays = _fitted(features, C=C, seed=seed, balanced=balanced)
    weight, bias, chosen = arrays["weight"], arrays["bias"], float(arrays["C"][0])
    linear = final_linear(head)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
        linear.bias.copy_(torch.from_numpy(bias.astype(np.float32)))
    return chosen


def probe_cv_accuracy(features: FeatureSet, *, seed: int, balanced: bool = False) -> float | None:
    """The linear probe's cross-validated accuracy on `features` (the mean over the folds at the C the
    cross-validation chose), or None with too few images per class to cross-validate.

    It is the fit fit_logistic_head(C=None) makes, stored the same way: measuring it first makes the
    probe's fit free afterwards.
    """
    accuracy = float(_fitted(features, C=None, seed=seed, balanced=balanced)["cv_accuracy"][0])
    return None if np.isnan(accuracy) else accuracy


def _fitted(features: FeatureSet, *, C: float | None, seed: int, balanced: bool) -> dict[str, np.ndarray]:
    """The fit's weight, bias, C and cv_accuracy (NaN without cross-validation), stored in the
    features' cache entry and read from there when the same fit was made before."""
    # Everything besides the features that changes the fit, scikit-learn's version included.
    parts = {"C": C, "grid": LOGREG_GRID, "seed": seed, "sklearn": version("scikit-learn"), "max_iter": 2000,
             **({"class_weight": "balanced"} if balanced else {})}  # absent when off: older entries stay valid
    arrays = load_derived(features, "logreg", parts)
    if arrays is None or "cv_accuracy" not in arrays:  # entries stored before cv_accuracy was kept: fit again
        weight, bias, chosen, accuracy = _fit(np.asarray(features.features, dtype=np.float32), np.asarray(features.labels),
                                              C, seed, class_weight="balanced" if balanced else None)
        arrays = {"weight": weight, "bias": bias, "C": np.array([chosen]), "cv_accuracy": np.array([accuracy])}
        store_derived(features, "logreg", parts, arrays)
    return arrays


def _fit(x: np.ndarray, y: np.ndarray, C: float | None, seed: int,
         class_weight: str | None = None) -> tuple[np.ndarray, np.ndarray, float, float]:
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    scaler = StandardScaler().fit(x)
    folds = min(5, int(np.bincount(y).min()))
    # One BLAS thread: beside torch's OpenMP threads, scikit-learn's multi-threaded BLAS ran this fit
    # dozens of times slower (threads spinning against each other), not faster.
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", category=FutureWarning)  # scikit-learn's API-change notices
        if C is None and folds >= 2:
            regression = LogisticRegressionCV(Cs=list(LOGREG_GRID), cv=folds, max_iter=2000, random_state=seed,
                                              class_weight=class_weight)
        else:
            regression = LogisticRegression(C=1.0 if C is None else C, max_iter=2000, random_state=seed,
                                            class_weight=class_weight)
        regression.fit(scaler.transform(x), y)
    chosen = float(regression.C_[0]) if hasattr(regression, "C_") else float(regression.C)
    # scores_: one (folds x Cs) array per class, the same for every class of a multinomial fit
    accuracy = float(np.mean(next(iter(regression.scores_.values())), axis=0).max()) if hasattr(regression, "scores_") else np.nan
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    weight = regression.coef_ / scale
    bias = regression.intercept_ - weight @ scaler.mean_
    if weight.shape[0] == 1:  # scikit-learn gives one row for two classes: logits (-z/2, z/2)
        weight, bias = np.vstack([-weight / 2, weight / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    return weight, bias, chosen, accuracy


