""""None of these": how unlike the known classes an image is, and the threshold above which it is unknown.

A classifier gives every image one of its classes, however unlike them all it is. `fit_unknown` learns,
on the frozen backbone's training embeddings (the features graft caches), a score that is higher the
less an image looks like the training data, and chooses a threshold on val so that a share
`known_recall` of the known val images scores at or under it: an image scoring above it is "unknown".
The classifier's answer itself is untouched, so the known classes' accuracy is unchanged.

The scores (`KINDS`), each higher for a less familiar image:

- "knn": one minus the cosine similarity to the k-th most similar training embedding, the embeddings
  centred on the train mean first (as the audit's duplicate search does: every feature of a ReLU
  network is positive, so uncentred vectors all point one way). Sun et al., "Out-of-distribution
  detection with deep nearest neighbors", ICML 2022. Keeps the training embeddings.
- "mahalanobis": the smallest Mahalanobis distance (squared) to a class mean, with one covariance
  shared by the classes (the within-class covariance, shrunk by Ledoit and Wolf's rule: there are
  usually fewer images than features). Lee et al., NeurIPS 2018. Keeps the class means and the
  precision matrix (D x D).
- "max-probability": minus the classifier's largest softmax probability (Hendrycks and Gimpel, ICLR
  2017): the baseline.
- "energy": minus logsumexp of the logits (Liu et al., "Energy-based out-of-distribution detection",
  NeurIPS 2020).

The last two need the classifier's logits and keep nothing but the threshold.

The default, "knn" with k = 1, was measured on real photos (docs/benchmarks.md, "Unknown images";
`python -m benchmarks.calibration.unknown_scores`): Lite0 features of four of flowers-dev's classes,
the fifth class's photos and cifar10-dev's images the unknowns, each class held out in turn. Its
AUROC against CIFAR was 0.987 (max-probability's 0.778), against the held-out flower 0.745 on the
mean of the five (max-probability's 0.717), ahead of max-probability for three of the five (behind
for daisies and tulips). Mahalanobis separated CIFAR best (0.994) but fell below chance for two held-
out flowers (0.368 for daisies), and a larger k separated both kinds of unknown less well.

`UnknownScore.to_dict` gives the JSON part (kind, k, threshold, known_recall, the val figures),
`UnknownScore.tensors` the arrays (float32, names beginning "unknown.") meant for a safetensors file;
`UnknownScore.from_dict(data, tensors)` reads both back. `auroc` and `fpr_at_tpr` measure how well a
score separates known from unknown images, as the literature reports it. Torch-free: numpy, and
scikit-learn where a covariance is shrunk or a curve measured.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from .errors import GraftError
from .memory import release_pages

KINDS = ("knn", "mahalanobis", "max-probability", "energy")
FEATURE_KINDS = ("knn", "mahalanobis")  # scored on embeddings; the others on the classifier's logits
DEFAULT_KIND = "knn"
DEFAULT_K = 1  # the nearest training image: measured best of 1, 5, 10, 20
KNOWN_RECALL = 0.95
QUERY_BLOCK = 256  # query rows compared with the training embeddings at once (knn), at most
SIMILARITY_CELLS = 1 << 22  # and at most this many similarities at once (16 MB of float32: 40 rows of 100,000)
FIT_BLOCK = 4096  # training rows centred and scaled at once (knn)


@dataclass(frozen=True)
class UnknownScore:
    """A fitted score and its threshold: `score` > `threshold` means unknown (`is_unknown`).

    `arrays` holds what the score needs (see `tensors` for the names); `val_images` the known val
    images the threshold was chosen on and `val_kept` the share of them it keeps.
    """

    kind: str
    threshold: float
    known_recall: float
    k: int
    val_images: int
    val_kept: float
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    in_graph: bool = False  # computed inside an exported model file (graft.export.unknown_graph), which gives the scores

    def score(self, features: np.ndarray | None = None, *, logits: np.ndarray | None = None) -> np.ndarray:
        """Each image's score (float64, N): `features` (N x D embeddings) for "knn" and "mahalanobis",
        `logits` (N x C, the classifier's outputs before softmax) for "max-probability" and "energy"."""
        if self.in_graph:
            raise GraftError("This score of unknown images is computed inside the exported model file, which gives "
                             "each image's score with its answer; it cannot be computed here.")
        if self.kind in FEATURE_KINDS:
            if features is None:
                raise GraftError(f"The {self.kind} score of unknown images needs the images' embeddings; none were given.")
            rows = _rows(features, "features", dim=self.dim)
            return _knn_score(rows, self.arrays, self.k) if self.kind == "knn" else _mahalanobis_score(rows, self.arrays)
        if logits is None:
            raise GraftError(f"The {self.kind} score of unknown images needs the classifier's logits; none were given.")
        return _logit_score(self.kind, _rows(logits, "logits"))

    def is_unknown(self, features: np.ndarray | None = None, *, logits: np.ndarray | None = None) -> np.ndarray:
        """Which images are unknown (bool, N): their score is above the threshold."""
        return self.score(features, logits=logits) > self.threshold

    @property
    def dim(self) -> int | None:
        """The embeddings' width the score was fitted on (None for a score of logits)."""
        return int(self.arrays["unknown.mean"].shape[0]) if "unknown.mean" in self.arrays else None

    def to_dict(self) -> dict:
        """The JSON part: plain numbers and strings (the arrays are `tensors`)."""
        return {"kind": self.kind, "threshold": self.threshold, "known_recall": self.known_recall, "k": self.k,
                "val_images": self.val_images, "val_kept": self.val_kept}

    def tensors(self) -> dict[str, np.ndarray]:
        """The arrays, float32 and contiguous, for a safetensors file: "knn" keeps "unknown.mean" (D)
        and "unknown.train" (N x D, the centred training embeddings at length 1); "mahalanobis" keeps
        "unknown.mean" (D), "unknown.class_means" (C x D) and "unknown.precision" (D x D); the scores
        of logits keep none."""
        return {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in self.arrays.items()}

    @classmethod
    def from_dict(cls, data: dict, tensors: dict[str, np.ndarray] | None = None, *, in_graph: bool = False) -> UnknownScore:
        """What `to_dict` and `tensors` wrote; a GraftError names what is missing. `in_graph`: the
        record of a score an exported model file computes itself (its metadata's "unknown"), no arrays."""
        try:
            kind = str(data["kind"])
            threshold, known_recall, val_kept = (float(data[name]) for name in ("threshold", "known_recall", "val_kept"))
            k, val_images = int(data["k"]), int(data["val_images"])
        except (KeyError, TypeError, ValueError) as error:
            raise GraftError(f"The unknown-image score's record is incomplete or damaged ({error!r}); train the "
                             "model again to fit it anew.") from None
        needed = {"knn": ("unknown.mean", "unknown.train"),
                  "mahalanobis": ("unknown.mean", "unknown.class_means", "unknown.precision")}.get(kind, ())
        if kind not in KINDS:
            raise GraftError(f"The unknown-image score's record names the score {kind!r}; graft knows {', '.join(KINDS)}.")
        if in_graph:
            return cls(kind=kind, threshold=threshold, known_recall=known_recall, k=k, val_images=val_images,
                       val_kept=val_kept, in_graph=True)
        missing = [name for name in needed if name not in (tensors or {})]
        if missing:
            raise GraftError(f"The {kind} score of unknown images needs the arrays {', '.join(missing)}, which the "
                             "model file lacks; train the model again to fit it anew.")
        arrays = {name: np.asarray(tensors[name], dtype=np.float32) for name in needed}  # type: ignore[index]
        return cls(kind=kind, threshold=threshold, known_recall=known_recall, k=k, val_images=val_images,
                   val_kept=val_kept, arrays=arrays)


def fit_unknown(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray | None = None,
    *,
    val_logits: np.ndarray | None = None,
    kind: str = DEFAULT_KIND,
    known_recall: float = KNOWN_RECALL,
    k: int = DEFAULT_K,
) -> UnknownScore:
    """Fit the score `kind` on the training embeddings (N x D, float16 or float32) and their labels
    (N class indexes), and choose its threshold on the known val images: `val_features` (M x D) for
    "knn" and "mahalanobis", `val_logits` (M x C) for "max-probability" and "energy".

    The threshold keeps a share `known_recall` of the val images (`choose_threshold`). A GraftError
    names the value and the fix for a `known_recall` outside (0, 1), an unknown `kind`, too few
    training images (knn: k; mahalanobis: one more than the classes) or too few val images to leave
    one out at that recall.
    """
    known_recall = check_known_recall(known_recall)
    if kind not in KINDS:
        raise GraftError(f"Unknown score of unknown images {kind!r}; choose one of {', '.join(KINDS)}.")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise GraftError(f"k = {k!r} nearest training images: give a whole number of 1 or more (default {DEFAULT_K}).")
    arrays: dict[str, np.ndarray] = {}
    if kind in FEATURE_KINDS:
        # knn reads the rows a block at a time (a memory map of float16 features stays one): the
        # score keeps one float32 copy of them, and fitting it makes no other.
        train = (_rows(train_features, "training features") if kind == "mahalanobis"
                 else _matrix(train_features, "training features"))
        labels = np.asarray(train_labels).reshape(-1)
        if len(labels) != len(train):
            raise GraftError(f"{len(train)} training embeddings but {len(labels)} labels: give one label per embedding.")
        arrays = _fit_knn(train, int(k)) if kind == "knn" else _fit_mahalanobis(train, labels)
    placeholder = UnknownScore(kind=kind, threshold=math.inf, known_recall=known_recall, k=int(k), val_images=0,
                               val_kept=1.0, arrays=arrays)
    if (val_features if kind in FEATURE_KINDS else val_logits) is None:
        what = ("val_features (the val images' embeddings)" if kind in FEATURE_KINDS
                else "val_logits (the classifier's logits on the val images)")
        raise GraftError(f"The {kind} score's threshold is chosen on the known val images: give {what}.")
    val_scores = placeholder.score(val_features, logits=val_logits)
    threshold = choose_threshold(val_scores, known_recall)
    return UnknownScore(kind=kind, threshold=threshold, known_recall=known_recall, k=int(k), val_images=len(val_scores),
                        val_kept=float(np.mean(val_scores <= threshold)), arrays=arrays)


def check_known_recall(value: float) -> float:
    """`--known-recall`, checked: a GraftError naming it unless 0 < value < 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise GraftError(f"--known-recall {value!r} is not a share strictly between 0 and 1; give one such as "
                         f"{KNOWN_RECALL} (the share of known images kept as known; the rest of val scores above "
                         "the threshold).")
    return float(value)


def val_images_needed(known_recall: float) -> int:
    """How many val images a threshold keeping `known_recall` of them needs (one of them left out)."""
    return math.ceil(round(1 / (1 - check_known_recall(known_recall)), 9))


def choose_threshold(val_scores: np.ndarray, known_recall: float) -> float:
    """The threshold that keeps the `known_recall` share of `val_scores` (scores of known images): the
    ceil(known_recall x M)-th lowest score, moved up to halfway to the next higher one, so that the
    boundary falls in the gap rather than on an image. At least one val image must score above it:
    M >= 1 / (1 - known_recall), else a GraftError says how many val images are needed."""
    known_recall = check_known_recall(known_recall)
    scores = np.sort(np.asarray(val_scores, dtype=np.float64).reshape(-1))
    needed = val_images_needed(known_recall)
    if len(scores) < needed:
        raise GraftError(f"Choosing the threshold of unknown images to keep {known_recall:.0%} of the known ones needs at "
                         f"least {needed} val images (one of them left out), and val holds {len(scores)}; add val "
                         "images (--val-split) or lower --known-recall.")
    kept = math.ceil(round(known_recall * len(scores), 9))
    reached = float(scores[kept - 1])
    above = scores[scores > reached]
    if not above.size:  # ties up to the highest score: nothing to leave out
        return reached
    middle = (reached + float(above[0])) / 2
    return middle if reached < middle < float(above[0]) else reached


# -- Measuring a score --------------------------------------------------------------------------------


def auroc(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """The area under the ROC curve of telling unknown images from known ones by score: the chance that
    a random unknown image scores above a random known one (ties count half). 0.5 is chance."""
    from sklearn.metrics import roc_auc_score

    truth, scores = _labelled(known_scores, unknown_scores)
    return float(roc_auc_score(truth, scores))


def fpr_at_tpr(known_scores: np.ndarray, unknown_scores: np.ndarray, tpr: float = 0.95) -> float:
    """The share of unknown images taken for known at the lowest threshold that keeps a share `tpr` of
    the known ones (the literature's "FPR at 95% TPR", the known images the positives). Lower is better."""
    from sklearn.metrics import roc_curve

    truth, scores = _labelled(known_scores, unknown_scores)
    false_positive, true_positive, _ = roc_curve(1 - truth, -scores, drop_intermediate=False)  # known positive, higher = more familiar
    return float(false_positive[np.searchsorted(true_positive, tpr - 1e-12)])


def _labelled(known_scores: np.ndarray, unknown_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    known = np.asarray(known_scores, dtype=np.float64).reshape(-1)
    unknown = np.asarray(unknown_scores, dtype=np.float64).reshape(-1)
    if not known.size or not unknown.size:
        raise GraftError(f"Measuring a score needs known and unknown images; got {known.size} known and "
                         f"{unknown.size} unknown.")
    return np.r_[np.zeros(known.size), np.ones(unknown.size)], np.r_[known, unknown]


# -- The scores ------------------------------------------------------------------------------------


def _rows(array: np.ndarray, what: str, *, dim: int | None = None) -> np.ndarray:
    """`array` as float32 rows (N x D, N may be 0); a GraftError for another shape, another width than
    `dim`, or values that are not finite."""
    rows = np.asarray(array, dtype=np.float32)
    if rows.ndim != 2 or not rows.shape[1]:
        raise GraftError(f"The {what} must be images x values (2-D, at least one value); got shape {rows.shape}.")
    if dim is not None and rows.shape[1] != dim:
        raise GraftError(f"The {what} have {rows.shape[1]} values per image, but the score of unknown images was "
                         f"fitted on {dim}: use the same backbone's features.")
    if not np.isfinite(rows).all():
        raise GraftError(f"The {what} hold values that are not finite (NaN or infinite).")
    return rows


def unit_rows(rows: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """`rows` minus `mean`, each scaled to length 1: their dot products are centred cosine similarities."""
    centred = rows - mean
    return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)


def _matrix(array: np.ndarray, what: str) -> np.ndarray:
    """`array` as it is (no copy), checked to be images x values; its values are checked as read (`_rows`)."""
    matrix = array if isinstance(array, np.ndarray) else np.asarray(array, dtype=np.float32)
    if matrix.ndim != 2 or not matrix.shape[1]:
        raise GraftError(f"The {what} must be images x values (2-D, at least one value); got shape {matrix.shape}.")
    return matrix


def _fit_knn(train: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """The train mean and the centred training rows at length 1, written block by block into one
    float32 array (the rows' only copy: on 100,000 images of 1,280 features, 0.5 GB)."""
    if len(train) < k:
        raise GraftError(f"The knn score of unknown images compares each image with its {k} nearest training images, "
                         f"and there are {len(train)}; add training images or lower k.")
    mean = train.mean(axis=0, dtype=np.float64).astype(np.float32)
    release_pages(train)  # a memory map's pages leave this process once read (they stay in the file cache)
    unit = np.empty(train.shape, dtype=np.float32)
    for start in range(0, len(train), FIT_BLOCK):
        unit[start : start + FIT_BLOCK] = unit_rows(_rows(train[start : start + FIT_BLOCK], "training features"), mean)
        release_pages(train)
    return {"unknown.mean": mean, "unknown.train": unit}


def _knn_score(rows: np.ndarray, arrays: dict[str, np.ndarray], k: int) -> np.ndarray:
    """1 - the cosine similarity to the k-th most similar training embedding, a block of queries at a
    time (QUERY_BLOCK, fewer where that would compare more than SIMILARITY_CELLS pairs at once)."""
    train = arrays["unknown.train"]
    scores = np.empty(len(rows), dtype=np.float64)
    block = max(1, min(QUERY_BLOCK, SIMILARITY_CELLS // max(1, len(train))))
    for start in range(0, len(rows), block):
        similarity = unit_rows(rows[start : start + block], arrays["unknown.mean"]) @ train.T
        kth = np.partition(similarity, len(train) - k, axis=1)[:, len(train) - k]
        scores[start : start + block] = 1.0 - kth
    return scores


def _fit_mahalanobis(train: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    from sklearn.covariance import LedoitWolf

    classes = np.unique(labels)
    if len(train) <= len(classes):
        raise GraftError(f"The mahalanobis score of unknown images needs more training images than classes to "
                         f"estimate a covariance; there are {len(train)} images of {len(classes)} classes.")
    means = np.stack([train[labels == label].mean(axis=0, dtype=np.float64) for label in classes])
    residuals = train - means[np.searchsorted(classes, labels)]
    precision = LedoitWolf(assume_centered=True).fit(residuals).precision_
    return {"unknown.mean": train.mean(axis=0, dtype=np.float64).astype(np.float32),
            "unknown.class_means": means.astype(np.float32), "unknown.precision": precision.astype(np.float32)}


def _mahalanobis_score(rows: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The smallest (x - mean_c)' P (x - mean_c) over the classes, computed in float64."""
    precision = arrays["unknown.precision"].astype(np.float64)
    means = arrays["unknown.class_means"].astype(np.float64)
    x = rows.astype(np.float64)
    projected = x @ precision
    distances = (np.einsum("nd,nd->n", projected, x)[:, None] - 2 * projected @ means.T
                 + np.einsum("cd,cd->c", means @ precision, means)[None, :])
    return distances.min(axis=1)


def _logit_score(kind: str, logits: np.ndarray) -> np.ndarray:
    values = logits.astype(np.float64)
    top = values.max(axis=1, keepdims=True)
    log_sum = top[:, 0] + np.log(np.exp(values - top).sum(axis=1))  # logsumexp
    if kind == "energy":
        return -log_sum
    return -np.exp(top[:, 0] - log_sum)  # minus the largest softmax probability
