"""The one-vs-rest linear probe for multi-label data (graft.heads.logistic with `targets`): it learns a
generated multi-label set, it is scikit-learn's one-vs-rest logistic regression (C chosen by
cross-validated mean average precision), and its fit is kept in the feature cache entry apart from
any single-label fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from graft.features import FeatureSet
from graft.heads import create_head
from graft.heads.logistic import (
    CV_FOLDS,
    LOGREG_GRID,
    _fitted_multilabel,
    _iterative_folds,
    fit_logistic_head,
    probe_cv_map,
)

RATES = (0.5, 0.3, 0.15, 0.08)


def generated(images: int, seed: int, dim: int = 24, signal: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Multi-hot targets (each class at its rate) and features in which each class present adds its
    own direction, under unit noise: learnable, not separable."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((images, len(RATES))) < RATES).astype(np.float32)
    directions = np.random.default_rng(99).normal(0, 1, (len(RATES), dim))
    features = rng.normal(0, 1, (images, dim)) + signal * targets @ directions + 3.0  # not centred: the fold is tested
    return features.astype(np.float16).astype(np.float32), targets  # as the cache holds them (float16)


def feature_set(features: np.ndarray, where, key: str | None = None) -> FeatureSet:
    """Features as the cache gives them (multi-label samples' label is -1); with `key`, a cache entry."""
    return FeatureSet(features.astype(np.float16), np.full(len(features), -1), {"key": key} if key else {}, where)


def logits(head: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return head(torch.from_numpy(features)).numpy()


def test_the_probe_learns_a_generated_multilabel_set(tmp_path):
    x, y = generated(400, seed=0)
    x_test, y_test = generated(400, seed=1)
    head = create_head(x.shape[1], len(RATES))
    C = fit_logistic_head(head, feature_set(x, tmp_path), C=None, seed=0, targets=y)
    assert C in LOGREG_GRID
    ap = [average_precision_score(y_test[:, c], logits(head, x_test)[:, c]) for c in range(len(RATES))]
    chance = y_test.mean(axis=0)  # a classifier that knows nothing scores the class's share
    assert np.mean(ap) > 0.85 and min(np.array(ap) - chance) > 0.4
    assert probe_cv_map(feature_set(x, tmp_path), targets=y, seed=0) > 0.85
    noise = np.random.default_rng(2).normal(0, 1, x.shape).astype(np.float32)
    assert probe_cv_map(feature_set(noise, tmp_path), targets=y, seed=0) < y.mean(axis=0).mean() + 0.15


def _hand_written_cv_c(z: np.ndarray, y: np.ndarray, fold: np.ndarray) -> float:
    """The C of the grid whose one-vs-rest fits score the best mean over classes of the mean AP over folds."""
    scores = []
    for C in LOGREG_GRID:
        ap = np.zeros((CV_FOLDS, y.shape[1]))
        for held in range(CV_FOLDS):
            train, test = fold != held, fold == held
            model = OneVsRestClassifier(LogisticRegression(C=C, max_iter=2000, random_state=0)).fit(z[train], y[train])
            ap[held] = average_precision_score(y[test], model.decision_function(z[test]), average=None)
        scores.append(ap.mean(axis=0).mean())
    return LOGREG_GRID[int(np.argmax(scores))]


def test_the_probe_is_scikit_learns_one_vs_rest_logistic_regression(tmp_path):
    x, y = generated(300, seed=3)
    x_test, _ = generated(100, seed=4)
    head = create_head(x.shape[1], len(RATES))
    C = fit_logistic_head(head, feature_set(x, tmp_path), C=None, seed=0, targets=y)

    fold = _iterative_folds(y, CV_FOLDS, 0)
    assert sorted(np.bincount(fold)) == [60] * 5
    assert (np.stack([y[fold == k].sum(axis=0) for k in range(5)]) >= 1).all()  # every class in every fold
    assert C == _hand_written_cv_c(StandardScaler().fit_transform(x), y, fold)
    for balanced in (False, True):
        head = create_head(x.shape[1], len(RATES))
        fit_logistic_head(head, feature_set(x, tmp_path), C=C, seed=0, targets=y, balanced=balanced)
        reference = OneVsRestClassifier(make_pipeline(StandardScaler(), LogisticRegression(
            C=C, max_iter=2000, random_state=0, class_weight="balanced" if balanced else None))).fit(x, y)
        # the head takes raw features: the standardisation is folded into its weights
        np.testing.assert_allclose(logits(head, x_test), reference.decision_function(x_test), rtol=1e-4, atol=1e-4)


def test_two_classes_get_a_logit_each(tmp_path):
    x, y = generated(200, seed=5)
    head = create_head(x.shape[1], 2)
    fit_logistic_head(head, feature_set(x, tmp_path), C=0.1, seed=0, targets=y[:, :2])
    reference = OneVsRestClassifier(make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))).fit(x, y[:, :2])
    np.testing.assert_allclose(logits(head, x), reference.decision_function(x), rtol=1e-4, atol=1e-4)


def test_a_second_identical_fit_is_read_from_the_cache_and_a_single_label_fit_never_is(tmp_path, monkeypatch):
    x, y = generated(200, seed=6)
    entry = feature_set(x, tmp_path, key="entry")
    first = create_head(x.shape[1], len(RATES))
    C = fit_logistic_head(first, entry, C=None, seed=0, targets=y)
    assert [path.name.startswith("logreg-multilabel-") for path in tmp_path.iterdir()] == [True]

    # every logistic fit standardises its features first (one StandardScaler.fit a fit)
    monkeypatch.setattr(StandardScaler, "fit", lambda *args, **kwargs: pytest.fail("fitted again"))
    second = create_head(x.shape[1], len(RATES))
    assert fit_logistic_head(second, entry, C=None, seed=0, targets=y) == C
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    assert probe_cv_map(entry, targets=y, seed=0) is not None  # the same fit: read too
    other = y.copy()
    other[0] = 1 - other[0]
    single_label = FeatureSet(entry.features, y[:, 0].astype(int), entry.meta, tmp_path)
    others = {"other targets": lambda: fit_logistic_head(second, entry, C=None, seed=0, targets=other),
              "balanced": lambda: fit_logistic_head(second, entry, C=None, seed=0, targets=y, balanced=True),
              "single-label": lambda: fit_logistic_head(create_head(x.shape[1], 2), single_label, C=None, seed=0)}
    for call in others.values():  # each fitted anew: none of them reads the stored fit
        with pytest.raises(pytest.fail.Exception, match="fitted again"):
            call()


def test_a_class_too_rare_to_cross_validate_and_one_on_every_image(tmp_path):
    x, y = generated(100, seed=7)
    y[:, 2] = 0
    y[5, 2] = 1  # one image: fitted, never cross-validated (no fold can both train and measure it)
    y[:, 3] = 1  # every image: nothing to fit, a constant logit
    arrays = _fitted_multilabel(feature_set(x, tmp_path), y, C=None, seed=0, balanced=False)
    assert np.isnan(arrays["cv_ap"][[2, 3]]).all() and not np.isnan(arrays["cv_ap"][:2]).any()
    assert arrays["cv_map"][0] == pytest.approx(arrays["cv_ap"][:2].mean())
    assert (arrays["weight"][3] == 0).all() and arrays["bias"][3] == pytest.approx(np.log(100.5 / 0.5))
    head = create_head(x.shape[1], len(RATES))
    fit_logistic_head(head, feature_set(x, tmp_path), C=None, seed=0, targets=y)
    assert logits(head, x[:1])[0, 3] > 5  # sigmoid near 1: every image has it
    # nothing cross-validated at all: C = 1, as for single-label data too small to cross-validate
    few = y[:, 2:]
    assert _fitted_multilabel(feature_set(x, tmp_path), few, C=None, seed=0, balanced=False)["C"][0] == 1.0
    assert probe_cv_map(feature_set(x, tmp_path), targets=few, seed=0) is None


def test_targets_that_do_not_fit_the_features_are_refused(tmp_path):
    x, y = generated(50, seed=8)
    with pytest.raises(ValueError, match="50 images x classes of 0 and 1"):
        fit_logistic_head(create_head(x.shape[1], 4), feature_set(x, tmp_path), C=None, seed=0, targets=y[:40])
    with pytest.raises(ValueError, match="50 images x classes of 0 and 1"):
        fit_logistic_head(create_head(x.shape[1], 4), feature_set(x, tmp_path), C=None, seed=0, targets=y * 2)
