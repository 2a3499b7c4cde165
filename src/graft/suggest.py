"""What to label next: unlabelled images ranked by how much labelling them should help.

After a first model, a person has more unlabelled images than time. `suggest` ranks them from what
graft already holds: the frozen backbone's embeddings of the labelled (training) images and of the
unlabelled ones, and the trained head's probabilities for the unlabelled ones. Three things make an
image worth labelling:

- uncertainty: the margin between the head's two most likely classes (small: the model cannot tell
  them apart), or the entropy of its probabilities;
- unlikeness to the training data: graft.unknown's default score, one minus the cosine similarity of
  the centred embeddings to the nearest training image;
- diversity: k-center greedy on the centred unit embeddings (Sener and Savarese, "Active learning for
  convolutional neural networks: a core-set approach", ICLR 2018): each pick is far from every
  labelled image and every earlier pick.

The ways of combining them (`METHODS`), each a greedy pick of `count` images:

- "margin-coverage" (the default): the image with the largest (1 - margin) x distance, the distance
  being to the nearest labelled image or earlier pick (1 - centred cosine similarity; before the first
  pick it is exactly graft.unknown's knn score). An uncertain image counts for little where it lies
  beside what is labelled or picked, and an outlying one for little where the model is sure of it.
- "margin": the smallest margins first. "entropy": the largest entropies first.
- "coverage": k-center greedy alone (the largest distance first).

Every method leaves out an image whose centred cosine similarity to a labelled image or an earlier
pick is at least `duplicate_similarity` (the audit's calibrated near-duplicate threshold, 0.9): no two
suggestions are near-duplicates, and no suggestion is a near copy of a labelled image. Fewer than
`count` images come back where the rest are such copies.

The default was chosen by measurement (docs/benchmarks.md, "What to label next";
`python -m benchmarks.calibration.active_learning`): cifar10-dev, Lite0 features, 10 labelled images
per class, 100 more per round for 5 rounds, the linear probe refitted each round; each method's
accuracy on held-out train images chose it, and cifar10-dev's test split reports it against
labelling at random.

Each suggestion says why (`Suggestion.reason`), from what is true of it among the unlabelled images:
"uncertain: roses 0.41 vs tulips 0.38" where its margin is in the smallest quarter; "unlike the
training images" where its unlikeness is above the threshold that keeps 95% of the training images
(graft.unknown.fit_unknown, each training image scored against the others); else "covers a region no
labelled image is near". Torch-free (numpy; scikit-learn where graft.unknown chooses the threshold),
except `suggest_for_run`, which extracts features with the run's backbone.
"""

from __future__ import annotations

import csv
import io
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import GraftError

METHODS = ("margin-coverage", "margin", "entropy", "coverage")
DEFAULT_METHOD = "margin-coverage"
DUPLICATE_SIMILARITY = 0.9  # graft.audit's DUPLICATE_THRESHOLD: centred cosine similarity of near-duplicates
UNCERTAIN_SHARE = 0.25  # "uncertain" in a reason: a margin among the smallest quarter of the unlabelled images
UNLIKE_RECALL = 0.95  # "unlike the training images": above the score that keeps this share of the training images
THRESHOLD_SAMPLE = 2000  # training images scored against the others to set that threshold (a seeded sample)
BLOCK = 1024  # rows compared at once


@dataclass(frozen=True)
class Suggestion:
    """One image to label: `index` is its row in the arrays given (`path`, where given, its file),
    `rank` its place (1 first). `reasons` holds "uncertain", "unlike" and/or "coverage"; `reason` says
    it in words. `margin` is the head's top probability minus its second (`top` and `second`: those
    classes and probabilities), `entropy` of its probabilities (natural log), `unlikeness`
    graft.unknown's knn score (1 - centred cosine similarity to the nearest training image), and
    `distance` the same to the nearest labelled image or earlier pick when it was picked."""

    index: int
    rank: int
    reason: str
    reasons: tuple[str, ...]
    top: tuple[str, float]
    second: tuple[str, float]
    margin: float
    entropy: float
    unlikeness: float
    distance: float
    path: str | None = None

    def to_dict(self) -> dict:
        return {"rank": self.rank, "path": self.path, "index": self.index, "reason": self.reason,
                "reasons": list(self.reasons), "top": self.top[0], "top_probability": round(self.top[1], 4),
                "second": self.second[0], "second_probability": round(self.second[1], 4),
                "margin": round(self.margin, 4), "entropy": round(self.entropy, 4),
                "unlikeness": round(self.unlikeness, 4), "distance": round(self.distance, 4)}


@dataclass(frozen=True)
class Suggestions:
    """`suggest`'s answer: the suggestions in rank order, the method, the unlabelled images ranked,
    how many were left out as near copies of a labelled image or an earlier pick, and the unlikeness
    threshold the reasons used (None where too few training images set one)."""

    items: list[Suggestion]
    method: str
    images: int
    near_copies: int
    unlike_threshold: float | None
    asked: int = 0
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def csv_text(self) -> str:
        """The suggestions as CSV: rank,path,reason, then the numbers behind the reason."""
        columns = ("rank", "path", "reason", "top", "top_probability", "second", "second_probability", "margin",
                   "entropy", "unlikeness", "distance")
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for item in self.items:
            writer.writerow(item.to_dict())
        return out.getvalue()


def suggest(
    train_features: np.ndarray,
    features: np.ndarray,
    probabilities: np.ndarray,
    *,
    classes: Sequence[str],
    count: int,
    method: str = DEFAULT_METHOD,
    duplicate_similarity: float = DUPLICATE_SIMILARITY,
    paths: Sequence[str | Path] | None = None,
    seed: int = 0,
) -> Suggestions:
    """Rank unlabelled images for labelling and return the first `count` (see the module's text).

    `train_features` (N x D): the labelled images' embeddings; `features` (M x D): the unlabelled
    images' embeddings from the same backbone; `probabilities` (M x C): the head's class
    probabilities for them, `classes` their C names (for the reasons); `paths` (M, optional) names
    each image in the answer. `seed` draws the training images that set the unlikeness threshold
    where there are over THRESHOLD_SAMPLE. A GraftError names a bad shape or value.
    """
    train = _rows(train_features, "labelled images' embeddings")
    rows = _rows(features, "unlabelled images' embeddings", dim=train.shape[1], empty=True)
    probs = _rows(probabilities, "unlabelled images' probabilities", empty=True)
    if len(probs) != len(rows):
        raise GraftError(f"{len(rows)} unlabelled embeddings but {len(probs)} rows of probabilities: give one of each "
                         "per image.")
    if probs.shape[1] != len(classes) or len(classes) < 2:
        raise GraftError(f"The probabilities have {probs.shape[1]} classes and {len(classes)} class names are given; "
                         "give one name per column, at least two.")
    if paths is not None and len(paths) != len(rows):
        raise GraftError(f"{len(rows)} unlabelled images but {len(paths)} paths: give one path per image.")
    count = check_count(count)
    if method not in METHODS:
        raise GraftError(f"Unknown way of suggesting images {method!r}; choose one of {', '.join(METHODS)}.")
    if not 0 < duplicate_similarity <= 1:
        raise GraftError(f"duplicate_similarity {duplicate_similarity!r}: give a cosine similarity in (0, 1].")

    from threadpoolctl import threadpool_limits

    # One BLAS thread: the greedy picks are many small products, which a multi-threaded BLAS on a shared
    # CPU ran about 50 times slower (1.2 s against 0.02 s for 100 picks among 1,000 images).
    with threadpool_limits(limits=1):
        score = _unlikeness_score(train, seed)
        unlikeness = score.score(rows) if len(rows) else np.zeros(0)
        unit = _unit(rows, score.arrays["unknown.mean"])
        ordered = np.sort(probs, axis=1)[:, ::-1]
        margin = ordered[:, 0] - ordered[:, 1] if len(rows) else np.zeros(0)
        entropy = -np.sum(np.where(probs > 0, probs * np.log(np.maximum(probs, 1e-300)), 0.0), axis=1)
        picked, distances, near = _greedy(method, unit, unlikeness.copy(), margin, entropy, count,
                                          1.0 - duplicate_similarity)
    threshold = score.threshold if math.isfinite(score.threshold) else None
    uncertain_margin = float(np.quantile(margin, UNCERTAIN_SHARE)) if len(rows) else 0.0
    top = np.argsort(-probs, axis=1, kind="stable")[:, :2]
    items = []
    for rank, (index, distance) in enumerate(zip(picked, distances), start=1):
        first, second = (classes[top[index, 0]], float(probs[index, top[index, 0]])), \
                        (classes[top[index, 1]], float(probs[index, top[index, 1]]))
        reasons = []
        words = []
        if margin[index] <= uncertain_margin:
            reasons.append("uncertain")
            words.append(f"uncertain: {first[0]} {first[1]:.2f} vs {second[0]} {second[1]:.2f}")
        if threshold is not None and unlikeness[index] > threshold:
            reasons.append("unlike")
            words.append(f"unlike the training images (distance {unlikeness[index]:.2f} to the nearest)")
        if not reasons:
            reasons.append("coverage")
            words.append(f"covers a region no labelled image is near (distance {distance:.2f})")
        items.append(Suggestion(index=int(index), rank=rank, reason="; ".join(words), reasons=tuple(reasons),
                                top=first, second=second, margin=float(margin[index]), entropy=float(entropy[index]),
                                unlikeness=float(unlikeness[index]), distance=float(distance),
                                path=None if paths is None else str(paths[index])))
    notes = []
    if near:
        notes.append(f"{near:,} unlabelled images were left out as near copies (centred cosine similarity >= "
                     f"{duplicate_similarity}) of a labelled image or of a suggestion")
    if len(items) < count:
        notes.append(f"{len(items):,} suggestions of the {count:,} asked: the other images are near copies or there "
                     "are no more")
    return Suggestions(items=items, method=method, images=len(rows), near_copies=near, unlike_threshold=threshold,
                       asked=count, notes=notes)


def check_count(count: int) -> int:
    """`--count`, checked: a whole number of 1 or more, else a GraftError naming it."""
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1:
        raise GraftError(f"--count {count!r}: give how many images to suggest, a whole number of 1 or more.")
    return int(count)


def _greedy(method: str, unit: np.ndarray, distance: np.ndarray, margin: np.ndarray, entropy: np.ndarray,
            count: int, duplicate_distance: float) -> tuple[list[int], list[float], int]:
    """The picks in order, each one's distance when picked, and how many images were left out as near
    copies. `distance` starts as each image's distance to the nearest labelled image and is lowered
    after each pick to the distance to the nearest labelled image or pick."""
    if method == "margin":
        priority = -margin
    elif method == "entropy":
        priority = entropy
    else:
        priority = None  # depends on the distance, recomputed after each pick
    available = distance > duplicate_distance
    near = int((~available).sum())
    picked: list[int] = []
    at_pick: list[float] = []
    while len(picked) < count and available.any():
        if method == "coverage":
            value = distance
        elif method == "margin-coverage":
            value = (1.0 - margin) * distance
        else:
            value = priority
        index = int(np.argmax(np.where(available, value, -np.inf)))
        picked.append(index)
        at_pick.append(float(distance[index]))
        available[index] = False
        distance = np.minimum(distance, 1.0 - unit @ unit[index])
        copies = available & (distance <= duplicate_distance)
        near += int(copies.sum())
        available &= ~copies
    return picked, at_pick, near


def _unlikeness_score(train: np.ndarray, seed: int):
    """graft.unknown's default knn score (k = 1) on the training embeddings, its threshold the one that
    keeps UNLIKE_RECALL of the training images, each scored by its nearest other training image (k = 2:
    the nearest is itself; a seeded sample of THRESHOLD_SAMPLE of them); an infinite threshold where
    there are too few training images to leave one out at that share."""
    from .unknown import DEFAULT_K, UnknownScore, choose_threshold

    mean = train.mean(axis=0, dtype=np.float64).astype(np.float32)
    arrays = {"unknown.mean": mean, "unknown.train": _unit(train, mean)}  # the knn score's arrays (UnknownScore.tensors)
    score = UnknownScore(kind="knn", threshold=math.inf, known_recall=UNLIKE_RECALL, k=DEFAULT_K, val_images=0,
                         val_kept=1.0, arrays=arrays)
    if len(train) < math.ceil(round(1 / (1 - UNLIKE_RECALL), 9)):
        return score
    sample = train
    if len(train) > THRESHOLD_SAMPLE:
        sample = train[np.sort(np.random.default_rng(seed).choice(len(train), THRESHOLD_SAMPLE, replace=False))]
    others = replace(score, k=2).score(sample)
    threshold = choose_threshold(others, UNLIKE_RECALL)
    return replace(score, threshold=threshold, val_images=len(sample), val_kept=float(np.mean(others <= threshold)))


def _rows(array: np.ndarray, what: str, *, dim: int | None = None, empty: bool = False) -> np.ndarray:
    rows = np.asarray(array, dtype=np.float32)
    if rows.ndim != 2 or not rows.shape[1] or (not empty and not len(rows)):
        raise GraftError(f"The {what} must be images x values (2-D, at least one row and one value); got shape "
                         f"{rows.shape}.")
    if dim is not None and rows.shape[1] != dim:
        raise GraftError(f"The {what} have {rows.shape[1]} values per image and the labelled images' {dim}: use the "
                         "same backbone's features for both.")
    if not np.isfinite(rows).all():
        raise GraftError(f"The {what} hold values that are not finite (NaN or infinite).")
    return rows


def _unit(rows: np.ndarray, mean: np.ndarray) -> np.ndarray:
    centred = rows - mean
    return (centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)).astype(np.float32)
