"""What to label next: unlabelled images ranked by how much labelling them should help.

After a first model, a person has more unlabelled images than time. `suggest` ranks them from what
graft already holds: the frozen backbone's embeddings of the labelled (training) images and of the
unlabelled ones, and the trained head's probabilities for the unlabelled ones. Three things make an
image worth labelling:

- uncertainty: the margin between the head's two most likely classes (small: the model cannot tell
  them apart), or the entropy of its probabilities; for a multi-label run, the distance of the class
  nearest its threshold, min |sigmoid - threshold| (small: the model cannot tell whether the image
  has that label), or the mean binary entropy of its classes;
- unlikeness to the training data: graft.unknown's default score, one minus the cosine similarity of
  the centred embeddings to the nearest training image;
- diversity: k-center greedy on the centred unit embeddings (Sener and Savarese, "Active learning for
  convolutional neural networks: a core-set approach", ICLR 2018): each pick is far from every
  labelled image and every earlier pick.

The ways of combining them (`METHODS`), each a greedy pick of `count` images:

- "margin-clusters" (the default): k-means (scikit-learn) of the unlabelled images' centred unit
  embeddings into `count` clusters; from each cluster, its least certain image (the smallest margin);
  the picks in order of margin. Uncertainty chooses within a group of similar images, and the groups
  spread the picks over the unlabelled images.
- "margin-coverage": the image with the largest (1 - margin) x distance, the distance being to the
  nearest labelled image or earlier pick (1 - centred cosine similarity; before the first pick it is
  exactly graft.unknown's knn score).
- "margin": the smallest margins first. "entropy": the largest entropies first.
- "coverage": k-center greedy alone (the largest distance first).
- "typical": TypiClust (Hacohen et al., "Active learning on a budget", ICML 2022): k-means of the
  labelled and unlabelled images together; from the clusters with the fewest labelled images, the
  largest first, each one's most typical image (the densest: nearest to its neighbours).

Every method leaves out an image whose centred cosine similarity to a labelled image or an earlier
pick is at least `duplicate_similarity` (the audit's calibrated near-duplicate threshold, 0.9): no two
suggestions are near-duplicates, and no suggestion is a near copy of a labelled image. Fewer than
`count` images come back where the rest are such copies.

The default was chosen by measurement (docs/benchmarks.md, "What to label next";
`python -m benchmarks.calibration.active_learning`): cifar10-dev, Lite0 features, 10 labelled images
per class, 100 more per round for 5 rounds, graft's linear probe refitted each round, 3 repeats. The
rule, the best mean accuracy over the rounds on held-out train images, chose "margin-clusters"
(71.5%; random 71.0%, margin 71.3%, typical 71.2%, margin-coverage 70.9%, coverage 70.2%, entropy
68.8%). On cifar10-dev's test split it reached random's accuracy after 600 labels (71.0%) with 436
labels on the mean of 3 repeats (458, 274 and 514 in each), and 72.6% at 600; the repeats differ by
about 2 points at each round, so the lead is a modest one.

Each suggestion says why (`Suggestion.reason`), from what is true of it among the unlabelled images:
"uncertain: roses 0.41 vs tulips 0.38" where its margin is in the smallest quarter and under 0.5;
"unlike the training images" where its unlikeness is above the threshold that keeps 95% of the
training images (graft.unknown's knn score, each training image scored against the others); else,
for a cluster's pick, "the least certain of a group of similar images" (or TypiClust's "the most
typical of a group ..."); else "covers a region no labelled image is near". Torch-free (numpy;
scikit-learn's k-means), except `suggest_for_run`, which extracts features with the run's backbone.
"""

from __future__ import annotations

import csv
import io
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import GraftError

if TYPE_CHECKING:
    from .classifier import Classifier
    from .record import RunRecord

METHODS = ("margin-coverage", "margin", "entropy", "coverage", "margin-clusters", "typical")
CLUSTER_METHODS = ("margin-clusters", "typical")
DEFAULT_METHOD = "margin-clusters"
DUPLICATE_SIMILARITY = 0.9  # graft.audit's DUPLICATE_THRESHOLD (not imported: the audit imports torch)
UNCERTAIN_SHARE = 0.25  # "uncertain" in a reason: a margin among the smallest quarter of the unlabelled images' ...
UNCERTAIN_MARGIN = 0.5  # ... and under this (the top class under half a unit of probability ahead of the second)
UNLIKE_RECALL = 0.95  # "unlike the training images": above the score that keeps this share of the training images
THRESHOLD_SAMPLE = 2000  # training images scored against the others to set that threshold (a seeded sample)


@dataclass(frozen=True)
class Suggestion:
    """One image to label: `index` is its row in the arrays given (`path`, where given, its file),
    `rank` its place (1 first). `reasons` holds "uncertain" and/or "unlike", else "group" (its cluster's
    pick) or "coverage"; `reason` says it in words. `margin` is the head's top probability minus its second (`top` and `second`: those
    classes and probabilities; for a multi-label run, the distance of the class nearest its threshold
    to it, `top` and `second` the two classes nearest their thresholds, with their sigmoids),
    `entropy` of its probabilities (natural log; multi-label: the classes' mean binary entropy), `unlikeness`
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
    thresholds: Sequence[float] | np.ndarray | None = None,
) -> Suggestions:
    """Rank unlabelled images for labelling and return the first `count` (see the module's text).

    `train_features` (N x D): the labelled images' embeddings; `features` (M x D): the unlabelled
    images' embeddings from the same backbone; `probabilities` (M x C): the head's class
    probabilities for them, `classes` their C names (for the reasons); `paths` (M, optional) names
    each image in the answer. `seed` seeds k-means and draws the training images that set the
    unlikeness threshold where there are over THRESHOLD_SAMPLE. `thresholds` (C, a multi-label run's):
    `probabilities` are then each class's sigmoid, and the uncertainty is how near the nearest class is
    to its threshold (`_uncertainty`). A GraftError names a bad shape or value.
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
    cut = _check_thresholds(thresholds, len(classes))
    if paths is not None and len(paths) != len(rows):
        raise GraftError(f"{len(rows)} unlabelled images but {len(paths)} paths: give one path per image.")
    count = check_count(count)
    if method not in METHODS:
        raise GraftError(f"Unknown way of suggesting images {method!r}; choose one of {', '.join(METHODS)}.")
    if not 0 < duplicate_similarity <= 1:
        raise GraftError(f"duplicate_similarity {duplicate_similarity!r}: give a cosine similarity in (0, 1].")

    from threadpoolctl import threadpool_limits

    from .unknown import unit_rows

    # One BLAS thread: the greedy picks are many small products, which a multi-threaded BLAS on a shared
    # CPU ran about 50 times slower (1.2 s against 0.02 s for 100 picks among 1,000 images).
    with threadpool_limits(limits=1):
        score = _unlikeness_score(train, seed)
        unlikeness = score.score(rows) if len(rows) else np.zeros(0)
        unit = unit_rows(rows, score.arrays["unknown.mean"]).astype(np.float32)
        margin, entropy, top = _uncertainty(probs, cut)
        picked, distances, grouped, near = _greedy(method, unit, unlikeness.copy(), margin, entropy, count,
                                          1.0 - duplicate_similarity, train_unit=score.arrays["unknown.train"],
                                          seed=seed)
    threshold = score.threshold if math.isfinite(score.threshold) else None
    uncertain_margin = min(float(np.quantile(margin, UNCERTAIN_SHARE)) if len(rows) else 0.0, UNCERTAIN_MARGIN)
    items = [_suggestion(index, rank, distance, method if group else "", top=[(classes[c], float(probs[index, c]))
                                                                         for c in top[index]],
                         against=None if cut is None else float(cut[top[index][0]]),
                         margin=float(margin[index]), entropy=float(entropy[index]),
                         unlikeness=float(unlikeness[index]), uncertain_margin=uncertain_margin, threshold=threshold,
                         path=None if paths is None else str(paths[index]))
             for rank, (index, distance, group) in enumerate(zip(picked, distances, grouped), start=1)]
    notes = []
    if near:
        notes.append(f"{near:,} unlabelled images were left out as near copies (centred cosine similarity >= "
                     f"{duplicate_similarity}) of a labelled image or of a suggestion")
    if len(items) < count:
        notes.append(f"{len(items):,} suggestions of the {count:,} asked: the other images are near copies or there "
                     "are no more")
    return Suggestions(items=items, method=method, images=len(rows), near_copies=near, unlike_threshold=threshold,
                       asked=count, notes=notes)


def _suggestion(index: int, rank: int, distance: float, group: str, *, top: list[tuple[str, float]],
                against: float | None, margin: float, entropy: float, unlikeness: float, uncertain_margin: float,
                threshold: float | None, path: str | None) -> Suggestion:
    """One pick with its reasons: "uncertain" where its margin is at most `uncertain_margin` (and under
    UNCERTAIN_MARGIN), "unlike" where its unlikeness is over `threshold`; else, where it was its cluster's
    pick (`group`: the clustering method, "" for none), "group"; else "coverage". `against`: a
    multi-label run's threshold of the class `top[0]` (the nearest to its threshold), said instead of
    the second class."""
    reasons, words = [], []
    versus = (f"{top[0][0]} {top[0][1]:.2f} vs {top[1][0]} {top[1][1]:.2f}" if against is None
              else f"{top[0][0]} {top[0][1]:.2f} against its threshold {against:.2f}")
    if margin <= uncertain_margin and margin < UNCERTAIN_MARGIN:
        reasons.append("uncertain")
        words.append(f"uncertain: {versus}")
    if threshold is not None and unlikeness > threshold:
        reasons.append("unlike")
        words.append(f"unlike the training images (distance {unlikeness:.2f} to the nearest)")
    if not reasons and group:
        reasons.append("group")
        words.append(f"the least certain of a group of similar images: {versus}" if group == "margin-clusters"
                     else "the most typical of a group of similar images with the fewest labelled ones")
    if not reasons:
        reasons.append("coverage")
        words.append(f"covers a region no labelled image is near (distance {distance:.2f})")
    return Suggestion(index=int(index), rank=rank, reason="; ".join(words), reasons=tuple(reasons), top=top[0],
                      second=top[1], margin=margin, entropy=entropy, unlikeness=unlikeness, distance=float(distance),
                      path=path)


def _check_thresholds(thresholds, classes: int) -> np.ndarray | None:
    """A multi-label run's per-class thresholds, checked: `classes` numbers in (0, 1); None where not given."""
    if thresholds is None:
        return None
    cut = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if len(cut) != classes or not ((cut > 0) & (cut < 1)).all():
        raise GraftError(f"{len(cut)} thresholds for {classes} classes: give one per class, each between 0 and 1.")
    return cut


def _uncertainty(probs: np.ndarray, cut: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image's margin (small: uncertain), entropy and its two classes to name (indexes, M x 2).

    One label an image (`cut` None): the top probability minus the second, the entropy of the softmax,
    the two most likely classes. Several (`cut`: each class's threshold on its sigmoid): the distance
    of the class nearest its threshold, min |p - threshold| (near 0: the model cannot tell whether
    the image has that label), the mean binary entropy of the classes, and the two classes nearest
    their thresholds."""
    exact = probs.astype(np.float64)
    if cut is None:
        ordered = np.sort(probs, axis=1)[:, ::-1]
        margin = ordered[:, 0] - ordered[:, 1] if len(probs) else np.zeros(0)
        entropy = -np.sum(exact * np.log(np.clip(exact, 1e-300, None)), axis=1)
        return margin, entropy, np.argsort(-probs, axis=1, kind="stable")[:, :2]
    gap = np.abs(exact - cut)
    clipped = np.clip(exact, 1e-12, 1 - 1e-12)
    entropy = -np.mean(clipped * np.log(clipped) + (1 - clipped) * np.log(1 - clipped), axis=1)
    return (gap.min(axis=1) if len(probs) else np.zeros(0)), entropy, np.argsort(gap, axis=1, kind="stable")[:, :2]


def check_count(count: int, what: str = "images to suggest") -> int:
    """`--count`, checked: a whole number of 1 or more, else a GraftError naming it (how many `what`)."""
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1:
        raise GraftError(f"--count {count!r}: give how many {what}, a whole number of 1 or more.")
    return int(count)


def _greedy(method: str, unit: np.ndarray, distance: np.ndarray, margin: np.ndarray, entropy: np.ndarray,
            count: int, duplicate_distance: float, *, train_unit: np.ndarray,
            seed: int) -> tuple[list[int], list[float], list[bool], int]:
    """The picks in order, each one's distance when picked, whether it was its cluster's pick (a method
    that clusters) and how many images were left out as near copies. `distance` starts as each image's distance to the nearest labelled image and is lowered
    after each pick to the distance to the nearest labelled image or pick."""
    available = distance > duplicate_distance
    near = int((~available).sum())
    preference = _cluster_preference(method, unit, train_unit, margin, available, count, seed) \
        if method in CLUSTER_METHODS else None
    picked: list[int] = []
    at_pick: list[float] = []
    grouped: list[bool] = []
    while len(picked) < count and available.any():
        if preference is not None:
            value = preference
        elif method == "coverage":
            value = distance
        elif method == "margin-coverage":
            value = (1.0 - margin) * distance
        else:
            value = -margin if method == "margin" else entropy
        index = int(np.argmax(np.where(available, value, -np.inf)))
        picked.append(index)
        at_pick.append(float(distance[index]))
        grouped.append(preference is not None and preference[index] > 0)
        available[index] = False
        distance = np.minimum(distance, 1.0 - unit @ unit[index])
        copies = available & (distance <= duplicate_distance)
        near += int(copies.sum())
        available &= ~copies
    return picked, at_pick, grouped, near


def _cluster_preference(method: str, unit: np.ndarray, train_unit: np.ndarray, margin: np.ndarray,
                        available: np.ndarray, count: int, seed: int) -> np.ndarray:
    """How much each image is preferred (higher first) by a method that clusters the embeddings
    (k-means, scikit-learn, `seed`), the images in no cluster's turn after the others by margin.

    "margin-clusters": `count` clusters of the available unlabelled images; each cluster's smallest
    margin is its representative, the representatives in order of margin.
    "typical" (TypiClust: Hacohen et al., "Active learning on a budget", ICML 2022): labelled and
    unlabelled images in min(labelled + count, MAX_CLUSTERS) clusters; the clusters with the fewest
    labelled images first, the largest first among those; from each in turn its most typical
    unlabelled image (the highest inverse mean distance to its TYPICAL_NEIGHBOURS nearest neighbours
    in the cluster), then each one's next most typical, and so on."""
    from sklearn.cluster import KMeans

    candidates = np.flatnonzero(available)
    preference = -np.argsort(np.argsort(margin, kind="stable"), kind="stable").astype(np.float64) - len(margin)
    if not len(candidates):
        return preference
    if method == "margin-clusters":
        clusters = KMeans(min(count, len(candidates)), n_init=KMEANS_INITS,
                          random_state=seed).fit_predict(unit[candidates])
        turns = [candidates[clusters == label][np.argsort(margin[candidates[clusters == label]], kind="stable")[:1]]
                 for label in np.unique(clusters)]
        order = sorted((int(members[0]) for members in turns), key=lambda index: margin[index])
    else:
        order = _typical_order(unit, train_unit, candidates, count, seed)
    preference[order] = np.arange(len(order), 0, -1, dtype=np.float64)
    return preference


KMEANS_INITS = 3  # margin-clusters' k-means starts: one merged two of 10 clear groups in 4 of 20 draws, 3 in none
MAX_CLUSTERS = 500  # TypiClust's cap on clusters (one k-means start: 700 clusters of 4,600 images took 11 s)
TYPICAL_NEIGHBOURS = 20


def _typical_order(unit: np.ndarray, train_unit: np.ndarray, candidates: np.ndarray, count: int,
                   seed: int) -> list[int]:
    from sklearn.cluster import KMeans

    points = np.vstack([train_unit, unit[candidates]])
    labelled = np.r_[np.ones(len(train_unit), dtype=bool), np.zeros(len(candidates), dtype=bool)]
    clusters = KMeans(min(len(train_unit) + count, MAX_CLUSTERS, len(points)), n_init=1,
                      random_state=seed).fit_predict(points)
    queues = []
    for label in np.unique(clusters):
        members = np.flatnonzero(clusters == label)
        if labelled[members].all():
            continue
        similarity = points[members] @ points[members].T
        neighbours = min(TYPICAL_NEIGHBOURS, len(members) - 1)
        if neighbours:
            nearest = -np.sort(-similarity, axis=1)[:, 1 : neighbours + 1]  # the image itself left out
            typicality = 1.0 / np.maximum(1.0 - nearest, 1e-6).mean(axis=1)
        else:
            typicality = np.ones(len(members))
        mine = [member for member in members[np.argsort(-typicality, kind="stable")] if not labelled[member]]
        queues.append((int(labelled[members].sum()), -len(members), int(label), mine))
    queues.sort()
    order: list[int] = []
    for turn in range(max((len(queue[3]) for queue in queues), default=0)):
        order += [int(candidates[queue[3][turn] - len(train_unit)]) for queue in queues if turn < len(queue[3])]
    return order


def _unlikeness_score(train: np.ndarray, seed: int):
    """graft.unknown's default knn score (k = 1) on the training embeddings, its threshold the one that
    keeps UNLIKE_RECALL of the training images, each scored by its nearest other training image (k = 2:
    the nearest is itself; a seeded sample of THRESHOLD_SAMPLE of them); an infinite threshold where
    there are too few training images to leave one out at that share."""
    from .unknown import DEFAULT_K, UnknownScore, choose_threshold, unit_rows

    mean = train.mean(axis=0, dtype=np.float64).astype(np.float32)
    arrays = {"unknown.mean": mean, "unknown.train": unit_rows(train, mean).astype(np.float32)}  # the knn score's arrays (UnknownScore.tensors)
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


# -- A run and a folder of unlabelled images -----------------------------------------------------------


def suggest_for_run(run: str | Path, images: Sequence[str | Path], *, count: int, method: str = DEFAULT_METHOD,
                    progress: bool = True, skipped: Sequence[str | Path] = (),
                    skipped_from: str | Path | None = None) -> Suggestions:
    """`graft suggest RUN UNLABELLED/`: `suggest` over the images in `images` (files, folders, globs),
    from the run's own features: the run's backbone, preprocessing and engine through graft's one
    extraction path and cache (graft.features.backbone_features; the labelled images' features are
    the ones training cached), and its head's probabilities on those features. The labelled images
    are every image of the run's data (train, val and test), as graft.data.find_data splits it
    again. `skipped`: images a person skipped in an earlier labelling round (graft.labelling's
    skipped_images, listed in the file `skipped_from`), left out with a note. A GraftError names a
    RUN that is not a run folder, missing training data, or images of which none can be read
    (unreadable ones are left out and named in `notes`) or all of which were skipped."""
    from .data.discover import Sample, find_data

    count = check_count(count)
    if method not in METHODS:
        raise GraftError(f"Unknown way of suggesting images {method!r}; choose one of {', '.join(METHODS)}.")
    paths, notes = _unlabelled_images(images)
    if skipped:
        paths, notes = _without_skipped(paths, skipped, skipped_from, notes)
    classifier, record, source = _open_run(run)
    config = record.config
    splits = find_data(source, val_split=config.data.val_split, seed=config.data.seed, task=config.data.task)
    backbone, runtime = run_backbone(classifier), config.runtime.resolve(progress=progress)
    labelled = [_features(backbone, samples, split, runtime)
                for split, samples in (("train", splits.train), ("val", splits.val), ("test", splits.test)) if samples]
    unlabelled = _features(backbone, [Sample(path, -1) for path in paths], "unlabelled", runtime)
    thresholds = None
    if record.task == "multilabel":
        thresholds = classifier.thresholds if classifier.thresholds is not None else np.full(len(classifier.classes), 0.5)
    found = suggest(np.concatenate(labelled), unlabelled, _head_probabilities(classifier, unlabelled),
                    classes=classifier.classes, count=count, method=method, paths=[str(path) for path in paths],
                    thresholds=thresholds)
    found.notes[:0] = notes
    return found


def _unlabelled_images(images: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """The readable image files among `images` and a note naming the unreadable ones; a GraftError
    where there is no image or none can be read."""
    from .data.discover import _unreadable
    from .data.inputs import expand_inputs

    paths, failed = expand_inputs(list(images))
    if failed and not paths:
        raise GraftError("No unlabelled images to rank: " + "; ".join(f"{error.path}: {error.reason}" for error in failed))
    if not paths:
        raise GraftError("No unlabelled images to rank: give a folder of images (graft suggest RUN UNLABELLED/).")
    unreadable = _unreadable(paths, None)
    readable = [path for path in paths if path not in unreadable]
    if not readable:
        raise GraftError("None of the unlabelled images can be read: "
                         + "; ".join(f"{path}: {reason}" for path, reason in list(unreadable.items())[:5]))
    notes = [f"{len(unreadable):,} unreadable image(s) left out: "
             + "; ".join(f"{path}: {reason}" for path, reason in list(unreadable.items())[:5])] if unreadable else []
    notes += [f"{error.path}: {error.reason}" for error in failed]
    return readable, notes


def _without_skipped(paths: list[Path], skipped: Sequence[str | Path], skipped_from: str | Path | None,
                     notes: list[str]) -> tuple[list[Path], list[str]]:
    """`paths` less the images `skipped` (listed in `skipped_from`), with a note saying how many; a
    GraftError where every one was skipped."""
    import os

    left_out = {os.path.normcase(os.path.abspath(path)) for path in skipped}
    kept = [path for path in paths if os.path.normcase(os.path.abspath(path)) not in left_out]
    if len(kept) == len(paths):
        return paths, notes
    where = skipped_from or "the list of skipped images"
    if not kept:
        raise GraftError(f"Every one of the {len(paths):,} unlabelled images was skipped in an earlier labelling round "
                         f"({where} lists them); remove their rows from that file to have them suggested again.")
    return kept, [*notes, f"{len(paths) - len(kept):,} image(s) skipped in an earlier labelling round left out "
                          f"({where})"]


def _open_run(run: str | Path) -> tuple[Classifier, RunRecord, str]:
    """The run folder `run` as a Classifier, its record and its training data (checked: the data at hand)."""
    from .classifier import load

    path = Path(run)
    if not path.is_dir():
        raise GraftError(f"{run} is not a run folder: graft suggest needs the folder graft train wrote (its "
                         "graft.json names the training images, whose features suggest compares with), not an "
                         "exported model or an image.")
    classifier = load(path)
    record = classifier.record
    if record is None:
        raise GraftError(f"{run} holds no run record (graft.json); give a run folder graft train wrote.")
    if record.data is None or not record.data.source:
        raise GraftError(f"{run}: its graft.json does not name its training data; train it again with graft train.")
    if not Path(record.data.source).exists():
        raise GraftError(f"The run's training data {record.data.source} is not there any more, so graft cannot compare "
                         "the unlabelled images with it; put the data back at that path.")
    return classifier, record, record.data.source


def run_backbone(classifier: Classifier):
    """The run's backbone, its `weights_id` (a key of the feature cache) set as training set it
    (Classifier.backbone_weights_id), so that the features training cached are read back."""
    backbone = classifier.model.backbone
    backbone.weights_id = classifier.backbone_weights_id()
    return backbone


def _features(backbone, samples, split: str, runtime) -> np.ndarray:
    from .features import backbone_features

    return np.asarray(backbone_features(backbone, samples, split=split, runtime=runtime).features, dtype=np.float32)


def _head_probabilities(classifier: Classifier, features: np.ndarray) -> np.ndarray:
    """The run's head on the features: its softmax probabilities (N x C), or each class's sigmoid for
    a multi-label run."""
    import torch

    with torch.no_grad():
        logits = classifier.model.head(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))).float()
        probabilities = logits.sigmoid() if classifier.task == "multilabel" else logits.softmax(dim=-1)
        return probabilities.numpy().astype(np.float64)
