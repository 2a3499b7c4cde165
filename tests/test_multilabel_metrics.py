"""Multi-label metrics and per-class thresholds (graft.evaluation.multilabel, .thresholds): each metric
against scikit-learn's on generated targets and probabilities, the edge cases (a class without a
positive, an image without a label), and thresholds where the best one is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    hamming_loss,
    precision_recall_fscore_support,
)

from graft.errors import GraftError
from graft.evaluation import (
    Evaluation,
    MultiLabelEvaluation,
    Thresholds,
    choose_thresholds,
    decide,
    evaluate_multilabel,
    evaluate_predictions,
    evaluation_from_dict,
)
from graft.evaluation.thresholds import BEST_F1, DEFAULT_THRESHOLD, FLOOR, GIVEN, NO_POSITIVE, best_f1_threshold

CLASSES = ["cat", "dog", "owl", "yak"]


def generated(images: int = 80, seed: int = 0, rates=(0.5, 0.3, 0.15, 0.05)) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities (each class's drawn from a beta distribution whose mean is its rate) and
    targets drawn from them: an image whose probability of a class is 0.8 has it 8 times in 10."""
    rng = np.random.default_rng(seed)
    rates = np.asarray(rates)
    probabilities = rng.beta(rates, 1 - rates, (images, len(rates)))
    return (rng.random(probabilities.shape) < probabilities).astype(np.int64), probabilities


def test_each_metric_equals_scikit_learns():
    targets, probabilities = generated()
    targets[3] = 0  # an image with no label
    thresholds = [0.5, 0.35, 0.6, 0.2]
    evaluation = evaluate_multilabel(targets, probabilities, classes=CLASSES, thresholds=thresholds)
    predicted = (probabilities >= np.array(thresholds)).astype(int)

    assert evaluation.map_macro == pytest.approx(average_precision_score(targets, probabilities, average="macro"))
    assert evaluation.map_micro == pytest.approx(average_precision_score(targets, probabilities, average="micro"))
    precision, recall, f1, support = precision_recall_fscore_support(targets, predicted, average=None, zero_division=0)
    for column, name in enumerate(CLASSES):
        row = evaluation.per_class[name]
        assert row["ap"] == pytest.approx(average_precision_score(targets[:, column], probabilities[:, column]))
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision[column], recall[column], f1[column]))
        assert row["support"] == support[column] and row["predicted"] == predicted[:, column].sum()
        assert row["threshold"] == thresholds[column]
    micro = precision_recall_fscore_support(targets, predicted, average="micro", zero_division=0)[:3]
    assert [evaluation.micro[key] for key in ("precision", "recall", "f1")] == pytest.approx(micro)
    assert evaluation.macro_f1 == pytest.approx(f1_score(targets, predicted, average="macro", zero_division=0))
    assert evaluation.exact_match == pytest.approx(accuracy_score(targets, predicted))
    assert evaluation.hamming_loss == pytest.approx(hamming_loss(targets, predicted))
    assert evaluation.cardinality == pytest.approx(targets.sum() / len(targets))
    assert evaluation.predicted_cardinality == pytest.approx(predicted.sum() / len(targets))
    assert evaluation.count == 80 and evaluation.unlabelled == (targets.sum(axis=1) == 0).sum() >= 1
    assert 0 < evaluation.exact_match < 1 and 0 < evaluation.hamming_loss < 1  # the data is neither perfect nor hopeless


def test_a_class_without_a_positive_has_no_ap_and_is_left_out_of_the_macro_means_and_said():
    targets, probabilities = generated(seed=1)
    targets[:, 2] = 0  # no owl among these images; the model still gives owl to some
    probabilities[:5, 2] = 0.9
    evaluation = evaluate_multilabel(targets, probabilities, classes=CLASSES, thresholds=[0.5] * 4)
    present = [0, 1, 3]
    predicted = (probabilities >= 0.5).astype(int)

    owl = evaluation.per_class["owl"]
    assert owl["ap"] is None and owl["support"] == 0 and evaluation.no_positive == ["owl"]
    assert owl["predicted"] >= 5 and owl["precision"] == 0.0  # its false positives still count against it
    assert evaluation.map_macro == pytest.approx(
        average_precision_score(targets[:, present], probabilities[:, present], average="macro"))
    assert evaluation.macro_f1 == pytest.approx(f1_score(targets, predicted, labels=present, average="macro"))
    assert evaluation.map_micro == pytest.approx(average_precision_score(targets, probabilities, average="micro"))
    assert "AP undefined for owl (no positive image), left out of the macro means" in evaluation.summary()
    headers, rows = evaluation.table()
    assert rows[2][:2] == ["owl", "n/a"] and headers[1] == "AP"
    assert rows[-2][0] == "macro average" and rows[-2][1] == f"{evaluation.map_macro:.3f}"
    assert rows[-1][0] == "micro average" and rows[-1][-1] == str(predicted.sum())


def test_an_image_without_a_label_is_an_exact_match_only_when_given_none():
    targets = np.array([[0, 0], [0, 0], [1, 0], [1, 1]])
    probabilities = np.array([[0.1, 0.2], [0.7, 0.2], [0.8, 0.3], [0.9, 0.6]])
    evaluation = evaluate_multilabel(targets, probabilities, classes=["a", "b"], thresholds=[0.5, 0.5])
    # image 0: no label, none given (a match); image 1: no label, "a" given (not one)
    assert evaluation.unlabelled == 2
    assert evaluation.exact_match == 0.75 == accuracy_score(targets, probabilities >= 0.5)
    assert evaluation.hamming_loss == 0.125 == hamming_loss(targets, probabilities >= 0.5)
    assert (evaluation.cardinality, evaluation.predicted_cardinality) == (0.75, 1.0)


def test_without_any_positive_or_any_image_nothing_is_made_up():
    none = evaluate_multilabel(np.zeros((3, 2)), np.full((3, 2), 0.1), classes=["a", "b"], thresholds=[0.5, 0.5])
    assert none.map_macro is None and none.map_micro is None and none.macro_f1 is None
    assert none.no_positive == ["a", "b"] and none.exact_match == 1.0
    empty = evaluate_multilabel(np.zeros((0, 2)), np.zeros((0, 2)), classes=["a", "b"], thresholds=[0.5, 0.5])
    assert empty.count == 0 and empty.map_macro is None and empty.exact_match == 0.0


def test_bad_shapes_and_targets_are_refused():
    targets, probabilities = generated(images=10)
    with pytest.raises(ValueError, match="images x 4 classes"):
        evaluate_multilabel(targets, probabilities[:, :3], classes=CLASSES, thresholds=[0.5] * 4)
    with pytest.raises(ValueError, match="3 thresholds for 4 classes"):
        evaluate_multilabel(targets, probabilities, classes=CLASSES, thresholds=[0.5] * 3)
    with pytest.raises(ValueError, match="0 or 1"):
        evaluate_multilabel(targets * 2, probabilities, classes=CLASSES, thresholds=[0.5] * 4)


def test_an_evaluation_survives_json_and_the_reader_tells_the_two_kinds_apart():
    targets, probabilities = generated(seed=2)
    multi = evaluate_multilabel(targets, probabilities, classes=CLASSES,
                                thresholds=choose_thresholds(targets, probabilities, classes=CLASSES))
    written = json.loads(json.dumps(multi.to_dict()))
    assert written["task"] == "multilabel" and written["macro_f1"] == multi.macro_f1
    assert evaluation_from_dict(written) == multi and isinstance(evaluation_from_dict(written), MultiLabelEvaluation)
    single = evaluate_predictions([0, 1, 1], [0, 1, 0], ["a", "b"])
    assert evaluation_from_dict(json.loads(json.dumps(single.to_dict()))) == single
    assert isinstance(evaluation_from_dict(single.to_dict()), Evaluation)


# -- Thresholds --------------------------------------------------------------------------------


def _best_f1_by_brute_force(truth: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's F1 at every threshold that changes the decisions (each score, and above all)."""
    return max(f1_score(truth, scores >= threshold, zero_division=0) for threshold in [*np.unique(scores), np.inf])


def test_each_threshold_reaches_the_best_f1_on_val_and_falls_between_two_images():
    targets, probabilities = generated(images=300, seed=3, rates=(0.5, 0.3, 0.15, 0.08))
    thresholds = choose_thresholds(targets, probabilities, classes=CLASSES)
    assert thresholds.rules == [BEST_F1] * 4
    for column in range(4):
        truth, scores, value = targets[:, column], probabilities[:, column], thresholds.values[column]
        reached = f1_score(truth, scores >= value)
        assert reached == pytest.approx(_best_f1_by_brute_force(truth, scores))
        assert thresholds.f1[column] == pytest.approx(reached)
        assert not np.isclose(scores, value).any()  # in a gap, not on an image
        kept, left = scores[scores >= value], scores[scores < value]
        assert value == pytest.approx((kept.min() + left.max()) / 2)
    assert thresholds.positives == list(targets.sum(axis=0)) and thresholds.images == 300


def test_a_known_best_threshold_is_found():
    # Positives score 0.30-0.45, negatives 0-0.25: every threshold in (max negative, 0.30] is perfect,
    # and 0.5 would find none of the class.
    rng = np.random.default_rng(4)
    truth = np.r_[np.ones(20, int), np.zeros(80, int)]
    scores = np.r_[rng.uniform(0.30, 0.45, 20), rng.uniform(0, 0.25, 80)]
    value = best_f1_threshold(truth, scores)
    assert value == pytest.approx((scores[:20].min() + scores[20:].max()) / 2)
    assert f1_score(truth, scores >= value) == 1.0 and f1_score(truth, scores >= 0.5, zero_division=0) == 0.0
    # with an overlap: positives 0.4-0.9 and negatives 0-0.5 reach the best F1 the brute force finds
    scores = np.r_[rng.uniform(0.4, 0.9, 20), rng.uniform(0, 0.5, 80)]
    assert f1_score(truth, scores >= best_f1_threshold(truth, scores)) == pytest.approx(
        _best_f1_by_brute_force(truth, scores))


def test_on_calibrated_probabilities_the_best_threshold_is_half_the_best_f1():
    # Lipton, Elkan and Naryanaswamy (2014): the F1-optimal threshold of calibrated probabilities is F1* / 2.
    targets, probabilities = generated(images=20_000, seed=7, rates=(0.5, 0.3, 0.15, 0.05))
    thresholds = choose_thresholds(targets, probabilities, classes=CLASSES)
    # F1 is flat about its best, so on a sample the best threshold wanders a few hundredths from F1* / 2
    assert thresholds.values == pytest.approx(np.array(thresholds.f1) / 2, abs=0.05)
    assert max(abs(value - 0.5) for value in thresholds.values) > 0.1  # one 0.5 for every class would not do


def test_the_floor_and_a_class_without_a_positive():
    # 2 positives in 100 (p = 0.02): scored lowest of all, the best F1 (give every image the class)
    # would be reached halfway below them; the floor p / (1 + p) holds instead.
    truth = np.zeros((100, 2), int)
    truth[:2, 0] = 1
    scores = np.full((100, 2), 0.3)
    scores[:2, 0] = 0.005
    scores[2:, 0] = np.linspace(0.01, 0.2, 98)
    thresholds = choose_thresholds(truth, scores, classes=["rare", "absent"])
    assert best_f1_threshold(truth[:, 0], scores[:, 0]) == pytest.approx(0.0025)
    assert thresholds.rules == [FLOOR, NO_POSITIVE]
    assert thresholds.values == pytest.approx([0.02 / 1.02, DEFAULT_THRESHOLD])
    lines = thresholds.describe()
    assert "floor p / (1 + p)" in lines[0] and "2 of 100 val images positive" in lines[0]
    assert "no positive among the 100 val images" in lines[1]
    # one positive scored above every negative: the best F1 (1.0) stands, far above the floor
    truth[50, 1] = 1
    scores[50, 1] = 0.9
    chosen = choose_thresholds(truth, scores, classes=["rare", "one"])
    assert chosen.rules[1] == BEST_F1 and chosen.values[1] == pytest.approx(0.6) and chosen.f1[1] == 1.0


def test_a_given_threshold_holds_for_every_class_and_a_bad_one_is_refused():
    targets, probabilities = generated(seed=5)
    given = choose_thresholds(targets, probabilities, classes=CLASSES, threshold=0.3)
    assert given.values == [0.3] * 4 and given.rules == [GIVEN] * 4
    assert given.f1 == pytest.approx([f1_score(targets[:, c], probabilities[:, c] >= 0.3) for c in range(4)])
    for bad in (0, 1, 1.5, -0.2, float("nan"), True, "0.5"):
        with pytest.raises(GraftError, match=f"--threshold {bad} is not a probability strictly between 0 and 1"):
            choose_thresholds(targets, probabilities, classes=CLASSES, threshold=bad)


def test_thresholds_survive_json_and_decide_gives_a_class_at_its_threshold():
    targets, probabilities = generated(seed=6)
    thresholds = choose_thresholds(targets, probabilities, classes=CLASSES)
    assert Thresholds.from_dict(json.loads(json.dumps(thresholds.to_dict()))) == thresholds
    values = thresholds.array()
    at = np.tile(values, (2, 1))
    at[1] = np.nextafter(values, 0)  # just under each threshold
    assert decide(at, thresholds).tolist() == [[True] * 4, [False] * 4]
    assert decide(probabilities[0], values).shape == (4,)  # one image
    evaluation = evaluate_multilabel(targets, probabilities, classes=CLASSES, thresholds=thresholds)
    assert [row["threshold"] for row in evaluation.per_class.values()] == thresholds.values
    assert [row["f1"] for row in evaluation.per_class.values()] == pytest.approx(thresholds.f1)
