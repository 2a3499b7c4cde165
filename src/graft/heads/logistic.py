"""The course's "bottleneck features + linear classifier": a logistic regression, folded into a Linear head.

The fit is a pure function of the cached training features, the regularisation grid and the seed,
so its result is stored inside the features' cache entry: a second identical linear-probe run
loads it instead of fitting again (and `graft cache rm` removes both together).

Single-label data gets one multinomial regression (softmax logits); multi-label data (`targets`, an
N x C multi-hot array) one binary regression per class, one-vs-rest (a logit per class, for a
sigmoid), all at one C chosen by cross-validated mean average precision.
"""

from __future__ import annotations

import hashlib
import warnings
from contextlib import contextmanager
from importlib.metadata import version

import numpy as np
import torch
from torch import nn

from ..features import FeatureSet
from ..features.derived import load_derived, store_derived
from ..memory import float32_rows, give_back, release_pages
from . import final_linear

LOGREG_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
CV_ROWS = 20_000  # above this many training images, C is chosen on a stratified sample of this many


def fit_logistic_head(head: nn.Module, features: FeatureSet, *, C: float | None, seed: int,
                      balanced: bool = False, targets: np.ndarray | None = None) -> float:
    """Set `head`'s last Linear layer to a logistic regression fitted on `features`; return the C used.

    Features are standardised for a well-conditioned fit; the scaling is then folded into the
    weights (w / sigma, b - w.mu / sigma), so the saved head takes raw features like any other.
    The regularisation C matters (on CIFAR-10 with Lite0, C=1 gave 75% where 0.003 gave 78%), so
    unless given it is chosen by stratified k-fold cross-validation on the training features only.
    `balanced`: weight each class inversely to its number of images (scikit-learn's class_weight="balanced").

    `targets` (N x C, 0/1: `DataSplits.targets` of multi-label data) makes it one-vs-rest: one binary
    logistic regression per class on the same standardised features (`_fit_one_vs_rest`), the head's
    outputs each class's logit for a sigmoid; `balanced` then weights each class's positives and
    negatives as scikit-learn's class_weight="balanced" does for that class's binary fit. None: each
    image's one class is `features.labels`.
    """
    arrays = (_fitted(features, C=C, seed=seed, balanced=balanced) if targets is None
              else _fitted_multilabel(features, targets, C=C, seed=seed, balanced=balanced))
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
             **({"class_weight": "balanced"} if balanced else {}),  # absent when off: older entries stay valid
             **({"cv_rows": CV_ROWS} if C is None and len(features.labels) > CV_ROWS else {})}
    arrays = load_derived(features, "logreg", parts)
    if arrays is None or "cv_accuracy" not in arrays:  # entries stored before cv_accuracy was kept: fit again
        weight, bias, chosen, accuracy = fit_rows(features.features, np.asarray(features.labels), C=C, seed=seed,
                                                  class_weight="balanced" if balanced else None)
        arrays = {"weight": weight, "bias": bias, "C": np.array([chosen]), "cv_accuracy": np.array([accuracy])}
        store_derived(features, "logreg", parts, arrays)
    return arrays


def fit_rows(features: np.ndarray, labels: np.ndarray, *, C: float | None, seed: int,
             class_weight: str | None = None) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The multinomial fit on `features` (N x D, an array or a memory map of the cache's float16 rows)
    as a linear-probe run makes it: weight, bias, the C used and the cross-validated accuracy (NaN
    without cross-validation). The rows are copied once (float64; float32 above CV_ROWS images, where
    C is chosen on a sample: half the memory where it matters, and the sample cross-validated before
    that copy is made) and the map's pages let go."""
    if _sampled(labels, C):
        return _fit_sampled(features, labels, seed, class_weight)
    x = np.asarray(features, dtype=np.float64)
    release_pages(features)  # the memory map's pages, read once: x holds the rows now
    return _fit(x, labels, C, seed, class_weight)


def _fit(x: np.ndarray, y: np.ndarray, C: float | None, seed: int,
         class_weight: str | None = None) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The fit on the rows `x`, standardised in place (no copy of scikit-learn's own: on 10,000 images,
    307 MB above the features with a float32 copy, a standardised one and scikit-learn's float64 one),
    in float64; above CV_ROWS images with C to choose, _fit_sampled's."""
    from ..memory import standard_scaler

    if _sampled(y, C):
        return _fit_sampled(x, y, seed, class_weight)
    x = np.asarray(x, dtype=np.float64)
    scaler = standard_scaler(x)  # a block of rows at a time (graft.memory: no temporary copy)
    scaler.transform(x, copy=False)
    folds = min(5, int(np.bincount(y).min()))
    search = accuracy = None
    if C is None and folds >= 2:
        search, accuracy = _search_c(x, y, folds, seed, class_weight)
    regression = search if search is not None else _regression(x, y, 1.0 if C is None else C, seed, class_weight)
    return _unscaled(regression, scaler, accuracy)


def _fit_sampled(rows, y: np.ndarray, seed: int, class_weight: str | None) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Above CV_ROWS images, C unknown: the scaler fitted on every row, a block at a time; C
    cross-validated on the stratified sample (_cv_rows), standardised, in float64 (LogisticRegressionCV
    computes in nothing else); then, that sample let go, every row copied once in float32 and fitted at
    that C (on 100,000 images of 1,280 features: 0.5 GB, not 1 GB). The sample's copies and the copy
    of every row are never held at once (the default run on 100,000 images peaked where they were).
    `rows`: an array or the cache's memory map, read as float32."""
    from ..memory import standard_scaler

    scaler = standard_scaler(_Float32Rows(rows))
    folds = min(5, int(np.bincount(y).min()))
    C, accuracy = 1.0, None
    if folds >= 2:
        sample = _cv_rows(y, seed)
        z = float32_rows(rows, sample)
        scaler.transform(z, copy=False)  # as the whole copy is standardised below, row for row
        z64 = z.astype(np.float64)
        del z
        search, accuracy = _search_c(z64, y[sample], folds, seed, class_weight)
        C = float(search.C_[0])
        del z64, search
        give_back()
    x = float32_rows(rows)  # a block at a time, the pages read let go
    scaler.transform(x, copy=False)
    return _unscaled(_regression(x, y, C, seed, class_weight), scaler, accuracy)


class _Float32Rows:
    """Slices of `rows` (an array or a memory map) as float32 copies: what the scaler is fitted on."""

    def __init__(self, rows):
        self.rows, self.shape = rows, rows.shape

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, part: slice) -> np.ndarray:
        return float32_rows(self.rows, part)  # the pages read let go


def _search_c(x: np.ndarray, y: np.ndarray, folds: int, seed: int, class_weight: str | None):
    """LogisticRegressionCV over LOGREG_GRID on standardised `x`: the search (its C_, and, refitted at
    that C, the fit on these rows) and the best mean cross-validated accuracy."""
    from sklearn.linear_model import LogisticRegressionCV

    search = LogisticRegressionCV(Cs=list(LOGREG_GRID), cv=folds, max_iter=2000, random_state=seed,
                                  class_weight=class_weight)
    with _quiet_one_thread():
        search.fit(x, y)
    # scores_: one (folds x Cs) array per class, the same for every class of a multinomial fit
    return search, float(np.mean(next(iter(search.scores_.values())), axis=0).max())


def _regression(x: np.ndarray, y: np.ndarray, C: float, seed: int, class_weight: str | None):
    from sklearn.linear_model import LogisticRegression

    with _quiet_one_thread():
        return LogisticRegression(C=C, max_iter=2000, random_state=seed, class_weight=class_weight).fit(x, y)


@contextmanager
def _quiet_one_thread():
    """One BLAS thread: beside torch's OpenMP threads, scikit-learn's multi-threaded BLAS ran this fit
    dozens of times slower (threads spinning against each other), not faster; and scikit-learn's
    API-change notices silenced."""
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", category=FutureWarning)
        yield


def _unscaled(regression, scaler, accuracy: float | None) -> tuple[np.ndarray, np.ndarray, float, float]:
    """weight and bias on the unstandardised features, the C fitted and the accuracy (NaN: none)."""
    chosen = float(regression.C_[0]) if hasattr(regression, "C_") else float(regression.C)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    weight = regression.coef_ / scale
    bias = regression.intercept_ - weight @ scaler.mean_
    if weight.shape[0] == 1:  # scikit-learn gives one row for two classes: logits (-z/2, z/2)
        weight, bias = np.vstack([-weight / 2, weight / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    return weight, bias, chosen, np.nan if accuracy is None else accuracy


def _sampled(y: np.ndarray, C: float | None) -> bool:
    """Whether C is to be chosen on a sample of the rows (_cv_rows): it is not given, and there are over CV_ROWS."""
    return C is None and len(y) > CV_ROWS


def _cv_rows(y: np.ndarray, seed: int) -> np.ndarray | None:
    """The rows C is chosen on: None (all) up to CV_ROWS images, else a sample of CV_ROWS stratified by
    class (seeded). Cross-validating 7 values of C on 5 folds of 100,000 images held the features in
    float64 several times over (the run peaked at 3.7 GB there) and was still running after 36 minutes
    on 2 cores; the final fit at the chosen C still uses every image."""
    if len(y) <= CV_ROWS:
        return None
    from sklearn.model_selection import train_test_split

    rows, _ = train_test_split(np.arange(len(y)), train_size=CV_ROWS, stratify=y, random_state=seed)
    return np.sort(rows)


# -- Multi-label data: one-vs-rest -------------------------------------------------------------

CV_FOLDS = 5  # multi-label cross-validation folds (fewer only with under 10 images)


def probe_cv_map(features: FeatureSet, *, targets: np.ndarray, seed: int, balanced: bool = False) -> float | None:
    """The one-vs-rest probe's cross-validated mean average precision on `features` and `targets`
    (N x C, 0/1) at the C the cross-validation chose, or None where no class could be cross-validated.

    It is the fit fit_logistic_head(C=None, targets=targets) makes, stored the same way.
    """
    score = float(_fitted_multilabel(features, targets, C=None, seed=seed, balanced=balanced)["cv_map"][0])
    return None if np.isnan(score) else score


def _fitted_multilabel(features: FeatureSet, targets: np.ndarray, *, C: float | None, seed: int,
                       balanced: bool) -> dict[str, np.ndarray]:
    """The one-vs-rest fit's weight (classes x features), bias, C, cv_map and cv_ap (each class's cross-validated
    AP at that C; NaN where not cross-validated), stored in the features' cache entry under a name of
    its own ("logreg-multilabel", never a single-label fit's "logreg") and keyed by the targets."""
    targets = np.asarray(targets)
    if targets.ndim != 2 or len(targets) != len(features) or not np.isin(targets, (0, 1)).all():
        raise ValueError(f"targets must be {len(features)} images x classes of 0 and 1, not {targets.shape}")
    targets = targets.astype(np.uint8)
    # The cache entry's key does not hold multi-label targets (its samples' label is -1): the fit's does.
    digest = hashlib.sha256(repr(targets.shape).encode() + targets.tobytes()).hexdigest()
    parts = {"task": "multilabel", "targets": digest, "C": C, "grid": LOGREG_GRID, "seed": seed, "folds": CV_FOLDS,
             "sklearn": version("scikit-learn"), "max_iter": 2000, "class_weight": "balanced" if balanced else None}
    arrays = load_derived(features, "logreg-multilabel", parts)
    if arrays is None:
        weight, bias, chosen, cv_ap = _fit_one_vs_rest(np.asarray(features.features, dtype=np.float32), targets, C, seed,
                                                       class_weight="balanced" if balanced else None)
        scored = cv_ap[~np.isnan(cv_ap)]
        arrays = {"weight": weight, "bias": bias, "C": np.array([chosen]), "cv_ap": cv_ap,
                  "cv_map": np.array([scored.mean() if scored.size else np.nan])}
        store_derived(features, "logreg-multilabel", parts, arrays)
    return arrays


def _fit_one_vs_rest(x: np.ndarray, y: np.ndarray, C: float | None, seed: int,
                     class_weight: str | None = None) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """One binary logistic regression per column of `y` on standardised `x`, all at one C: `C`, or
    (None) the grid's C with the best cross-validated mean AP (`_cv_average_precision`; 1.0 where no
    class can be cross-validated). Returns the weight and bias on raw features, the C and each
    class's cross-validated AP at it (NaN where not cross-validated)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    cv_ap = np.full(y.shape[1], np.nan)
    with _quiet_one_thread():
        chosen = 1.0 if C is None else float(C)
        if C is None:
            scores = _cv_average_precision(z, y, seed, class_weight)  # classes x grid
            scored = ~np.isnan(scores[:, 0])
            if scored.any():
                best = int(np.argmax(scores[scored].mean(axis=0)))  # ties: the smaller C
                chosen, cv_ap = float(LOGREG_GRID[best]), scores[:, best]
        fits = [_binary_fit(z, column, chosen, seed, class_weight) for column in y.T]
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    weight = np.vstack([coef for coef, _ in fits]) / scale
    bias = np.array([intercept for _, intercept in fits]) - weight @ scaler.mean_
    return weight, bias, chosen, cv_ap


def _binary_fit(z: np.ndarray, y: np.ndarray, C: float, seed: int, class_weight: str | None) -> tuple[np.ndarray, float]:
    """One class's coefficients and intercept. A class on every image or on none has nothing to fit:
    its logit is then the constant log-odds of its smoothed share, (positives + 0.5) / (images + 1)."""
    from sklearn.linear_model import LogisticRegression

    positives = int(y.sum())
    if positives in (0, len(y)):
        return np.zeros(z.shape[1]), float(np.log((positives + 0.5) / (len(y) - positives + 0.5)))
    regression = LogisticRegression(C=C, max_iter=2000, random_state=seed, class_weight=class_weight).fit(z, y)
    return regression.coef_[0], float(regression.intercept_[0])


def _cv_average_precision(z: np.ndarray, y: np.ndarray, seed: int, class_weight: str | None) -> np.ndarray:
    """Each class's AP (rows) at each C of the grid (columns), the mean over the folds where it can be
    measured: its held-out images hold a positive, and its training images positives and negatives.
    NaN for a class measured in no fold. The folds are stratified iteratively (`_iterative_folds`);
    each class's fits go through the grid from strong to weak regularisation, each starting from the
    last one's solution."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score

    scores = np.full((y.shape[1], CV_FOLDS, len(LOGREG_GRID)), np.nan)
    folds = min(CV_FOLDS, len(y) // 2)
    if folds < 2:
        return scores.mean(axis=1)
    fold = _iterative_folds(y, folds, seed)
    for held in range(folds):
        train, test = fold != held, fold == held
        for column in range(y.shape[1]):
            fitted, measured = y[train, column], y[test, column]
            if not measured.any() or fitted.min() == fitted.max():
                continue
            regression = LogisticRegression(max_iter=2000, random_state=seed, class_weight=class_weight, warm_start=True)
            for index, C in enumerate(LOGREG_GRID):
                regression.set_params(C=C).fit(z[train], fitted)
                scores[column, held, index] = average_precision_score(measured, regression.decision_function(z[test]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # a class measured in no fold: NaN, on purpose
        return np.nanmean(scores, axis=1)


def _iterative_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each image's fold (0 to folds - 1), the folds of even size with each label's share kept in
    each: graft.data.stratify's iterative split, taking 1/folds of the images, then 1/(folds - 1) of
    the rest, and so on."""
    from ..data.stratify import iterative_split

    fold = np.full(len(y), folds - 1)
    remaining = np.arange(len(y))
    for index in range(folds - 1):
        held = iterative_split(y[remaining], 1 / (folds - index), seed + index)
        fold[remaining[held]] = index
        remaining = remaining[~held]
    return fold
