"""Scores of unknown images (graft.unknown) on generated embeddings: every score tells points far from
the training clusters from points of the clusters, the threshold keeps the share of val asked for, a
fitted score survives JSON and safetensors unchanged, and bad inputs are GraftErrors that name the fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load, save

from graft.errors import GraftError
from graft.unknown import (
    KINDS,
    UnknownScore,
    auroc,
    check_known_recall,
    choose_threshold,
    fit_unknown,
    fpr_at_tpr,
)

DIM = 16
CLASSES = 3
SPREAD = 5.0  # each class's centre: SPREAD along its own axis


def cluster(images: int, seed: int, axes=range(CLASSES)) -> tuple[np.ndarray, np.ndarray]:
    """`images` points around each centre SPREAD x e_axis (noise 0.6 per coordinate), with the axis's place as label."""
    rng = np.random.default_rng(seed)
    axes = list(axes)
    labels = np.repeat(np.arange(len(axes)), images)
    centres = SPREAD * np.eye(DIM, dtype=np.float32)[axes]
    return (centres[labels] + rng.normal(0, 0.6, (len(labels), DIM))).astype(np.float32), labels


def logits(features: np.ndarray) -> np.ndarray:
    """A nearest-centre classifier's logits: x . c - |c|^2 / 2, uniform for a point far from every centre."""
    centres = SPREAD * np.eye(DIM)[:CLASSES]
    return features @ centres.T - (centres**2).sum(axis=1) / 2


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    train, train_y = cluster(40, seed=0)
    val, _ = cluster(20, seed=1)
    test, _ = cluster(30, seed=2)
    far, _ = cluster(30, seed=3, axes=(8, 11, 14))  # three other directions: no known class
    return {"train": train, "train_y": train_y, "val": val, "test": test, "far": far}


def fitted(data: dict[str, np.ndarray], kind: str, **options) -> UnknownScore:
    return fit_unknown(data["train"], data["train_y"], data["val"], val_logits=logits(data["val"]), kind=kind, **options)


@pytest.mark.parametrize("kind", KINDS)
def test_each_score_separates_far_points_from_the_training_clusters(data, kind):
    score = fitted(data, kind)
    known = score.score(data["test"], logits=logits(data["test"]))
    far = score.score(data["far"], logits=logits(data["far"]))
    assert auroc(known, far) > 0.99
    assert fpr_at_tpr(known, far) < 0.05
    assert score.is_unknown(data["far"], logits=logits(data["far"])).mean() > 0.95
    assert (~score.is_unknown(data["test"], logits=logits(data["test"]))).mean() >= 0.85  # 95% of val kept


def test_knn_is_one_minus_the_kth_centred_cosine_similarity(data):
    score = fitted(data, "knn", k=3)
    mean = data["train"].mean(axis=0)
    unit = lambda rows: (rows - mean) / np.linalg.norm(rows - mean, axis=1, keepdims=True)  # noqa: E731
    similarity = unit(data["far"][:5]) @ unit(data["train"]).T
    expected = 1 - np.sort(similarity, axis=1)[:, -3]
    np.testing.assert_allclose(score.score(data["far"][:5]), expected, rtol=1e-5, atol=1e-6)


def test_mahalanobis_is_the_nearest_class_mean_under_the_shared_precision(data):
    score = fitted(data, "mahalanobis")
    precision, means = score.arrays["unknown.precision"].astype(np.float64), score.arrays["unknown.class_means"]
    for row, value in zip(data["far"][:5], score.score(data["far"][:5])):
        assert value == pytest.approx(min((row - m) @ precision @ (row - m) for m in means), rel=1e-4)
    np.testing.assert_allclose(means, [data["train"][data["train_y"] == c].mean(axis=0) for c in range(CLASSES)],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("recall", [0.5, 0.8, 0.9, 0.95])
def test_the_threshold_keeps_the_share_of_val_asked_for(data, recall):
    val = data["val"]  # 60 images
    for kind in ("knn", "mahalanobis", "energy"):
        score = fitted(data, kind, known_recall=recall)
        kept = (score.score(val, logits=logits(val)) <= score.threshold).sum()
        assert kept == int(np.ceil(recall * len(val) - 1e-9))
        assert score.val_kept == pytest.approx(kept / len(val)) and score.val_images == len(val)


def test_choose_threshold_falls_halfway_into_the_gap():
    scores = np.random.default_rng(0).permutation(np.arange(100.0))
    assert choose_threshold(scores, 0.95) == 94.5  # 95 of 100 at or under it
    assert choose_threshold(np.r_[np.zeros(19), 1.0], 0.95) == 0.5
    assert choose_threshold(np.ones(20), 0.95) == 1.0  # all tied: all kept


def test_measures_on_known_cases():
    known, unknown = [0, 1, 2, 3], [2.5, 10]
    assert auroc(known, unknown) == pytest.approx(7 / 8)  # 2.5 beats three known scores, 10 all four
    assert fpr_at_tpr(known, unknown) == 0.5  # keeping 95% of known keeps all four: 2.5 passes as known
    assert fpr_at_tpr(known, unknown, tpr=0.5) == 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_to_dict_and_tensors_round_trip_through_json_and_safetensors(data, kind, tmp_path):
    score = fitted(data, kind, k=4)
    path = tmp_path / "unknown.safetensors"
    path.write_bytes(save(score.tensors()))
    again = UnknownScore.from_dict(json.loads(json.dumps(score.to_dict())), load(path.read_bytes()))
    assert again.to_dict() == score.to_dict()
    both = np.vstack([data["test"], data["far"]])
    np.testing.assert_array_equal(again.score(both, logits=logits(both)), score.score(both, logits=logits(both)))
    assert set(score.tensors()) == {"knn": {"unknown.mean", "unknown.train"},
                                    "mahalanobis": {"unknown.mean", "unknown.class_means", "unknown.precision"}}.get(kind, set())


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1, True, "0.9", float("nan")])
def test_known_recall_outside_zero_to_one_is_refused(data, value):
    with pytest.raises(GraftError, match="--known-recall"):
        check_known_recall(value)
    with pytest.raises(GraftError, match="--known-recall"):
        fitted(data, "knn", known_recall=value)


def test_too_few_images_are_refused_with_the_count_needed(data):
    with pytest.raises(GraftError, match="at least 20 val images.*val holds 19"):
        fit_unknown(data["train"], data["train_y"], data["val"][:19], kind="knn")
    fit_unknown(data["train"], data["train_y"], data["val"][:20], kind="knn")  # 20 leave one out at 95%
    with pytest.raises(GraftError, match="10 nearest training images, and there are 6"):
        fit_unknown(data["train"][:6], data["train_y"][:6], data["val"], kind="knn", k=10)
    with pytest.raises(GraftError, match="more training images than classes"):
        fit_unknown(data["train"][[0, 40, 80]], data["train_y"][[0, 40, 80]], data["val"], kind="mahalanobis")


def test_other_bad_inputs_are_graft_errors(data):
    score = fitted(data, "knn")
    with pytest.raises(GraftError, match="8 values per image.*fitted on 16"):
        score.score(data["far"][:, :8])
    with pytest.raises(GraftError, match="needs the images' embeddings"):
        score.score(logits=logits(data["far"]))
    with pytest.raises(GraftError, match="needs the classifier's logits"):
        fitted(data, "energy").score(data["far"])
    with pytest.raises(GraftError, match="give val_logits"):
        fit_unknown(data["train"], data["train_y"], data["val"], kind="max-probability")
    with pytest.raises(GraftError, match="choose one of knn"):
        fitted(data, "softmax")
    with pytest.raises(GraftError, match="one label per embedding"):
        fit_unknown(data["train"], data["train_y"][:-1], data["val"], kind="mahalanobis")
    with pytest.raises(GraftError, match="not finite"):
        score.score(np.full((2, DIM), np.nan, dtype=np.float32))
    with pytest.raises(GraftError, match="2-D"):
        score.score(data["far"][0])
    assert score.score(np.zeros((0, DIM), dtype=np.float32)).shape == (0,)  # an empty batch: no scores
    assert fitted(data, "energy").score(logits=np.zeros((0, CLASSES))).shape == (0,)
    with pytest.raises(GraftError, match="lacks"):
        UnknownScore.from_dict(score.to_dict(), {})


def test_the_knn_fit_centres_its_rows_block_by_block_to_the_same_arrays(data, monkeypatch, tmp_path):
    whole = fitted(data, "knn")
    monkeypatch.setattr("graft.unknown.FIT_BLOCK", 7)  # 120 training rows: 18 blocks, the last one short
    stored = np.lib.format.open_memmap(tmp_path / "train.npy", mode="w+", dtype=np.float32, shape=data["train"].shape)
    stored[:] = data["train"]
    blocked = fit_unknown(stored, data["train_y"], data["val"])
    assert np.array_equal(whole.arrays["unknown.train"], blocked.arrays["unknown.train"])
    assert whole.threshold == blocked.threshold
    stored[3, 2] = np.nan  # a bad value in a later block is still found
    with pytest.raises(GraftError, match="not finite"):
        fit_unknown(stored, data["train_y"], data["val"])


def test_the_knn_score_compares_fewer_queries_at_once_against_many_training_rows(data, monkeypatch):
    score = fitted(data, "knn", k=2)
    whole = score.score(data["far"])
    monkeypatch.setattr("graft.unknown.SIMILARITY_CELLS", 3 * len(data["train"]))  # 3 queries a block
    np.testing.assert_allclose(score.score(data["far"]), whole, rtol=0, atol=1e-6)  # BLAS may sum a block otherwise
