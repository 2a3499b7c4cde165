"""The three checks of a data audit, each on backbone features or on the file list alone.

- Near duplicates: an image in val or test whose features are almost those of an image in an
  earlier split (a copy, a re-saved JPEG, a resized or slightly cropped version) lets the model be
  scored on what it trained on. Identical files anywhere are found by their bytes.
- Imbalance: classes with far fewer training images than the others.
- Likely mislabelled: images that a classifier which never saw them (out-of-fold predictions)
  confidently puts in another class.

The thresholds were calibrated on CIFAR-10 with EfficientNet-Lite0 features: see docs/audit.md.
"""

from __future__ import annotations

import hashlib
import numbers
import warnings
from collections import defaultdict
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path

import numpy as np

from ..data.discover import DataSplits
from ..features import FeatureSet
from ..features.derived import load_derived, store_derived
from ..memory import float32_rows, give_back, release_pages, standard_scaler
from .result import DuplicatePair, Imbalance, NearDuplicateGroup, Suspect

DUPLICATE_THRESHOLD = 0.9
# Within a split: the best F1 of telling a photo's altered copies (shifted, cropped, re-encoded, brighter or
# darker, as video frames differ) from distinct photos of its class, tuned on three flowers-dev classes; on
# the other two 0.93 precision / 0.99 recall, on cifar10-dev 1.00 / 0.59 (python -m
# benchmarks.calibration.near_duplicates; docs/audit.md).
NEAR_DUPLICATE_THRESHOLD = 0.75
MISLABEL_CONFIDENCE = 0.9
MISLABEL_C = 0.01  # regularisation of the out-of-fold logistic regression (docs/audit.md)
UNDER_MEDIAN = 0.5  # a class with fewer than half the median count is under-represented ...
MAX_RATIO = 3.0  # ... and so is one with less than a third of the largest class
# Under this many train images in the largest class, a gap between classes is a handful of images:
# said as the counts it is, not as an alarm.
FEW_IMAGES = 20
SPLIT_ORDER = ("train", "val", "test")


# -- Near duplicates ---------------------------------------------------------------------------


def find_duplicates(
    splits: DataSplits, features: dict[str, FeatureSet], *, threshold: float = DUPLICATE_THRESHOLD
) -> list[DuplicatePair]:
    """Pairs of images in different splits whose features have cosine similarity >= `threshold`,
    and pairs of identical files (same bytes) anywhere, within a split too. Most similar first."""
    pairs = {(pair.path_a, pair.path_b): pair for pair in closest_pairs(splits, features) if pair.similarity >= threshold}
    for pair in identical_files(splits):
        pairs[(pair.path_a, pair.path_b)] = pair  # exact, whatever the features said
    return sorted(pairs.values(), key=lambda pair: (-pair.similarity, str(pair.path_b)))


def closest_pairs(
    splits: DataSplits, features: dict[str, FeatureSet], *, centre: bool = True, block: int = 512,
    reference_block: int | None = None,
) -> list[DuplicatePair]:
    """Each val image with its most similar train image, each test image with its most similar train
    and val images: one pair per image and earlier split, however many near copies there are.

    Features are centred on the train mean before normalising: every feature of a ReLU network is
    positive, so uncentred vectors all point the same way and unrelated images look alike
    (`centre=False` is there to measure that: docs/audit.md). They are read from the cache a block
    at a time (`best_matches`), never whole: 100,000 train images' float32 copies alone held 500 MB.
    """
    present = [split for split in SPLIT_ORDER if split in features and len(features[split])]
    mean = row_mean(features["train"].features) if centre and "train" in present else np.float32(0.0)
    unit_rows = centred_unit_rows(mean)

    pairs = []
    for position, later in enumerate(present):
        for earlier in present[:position]:
            match, similarity = best_matches(features[later].features, features[earlier].features, block=block,
                                             reference_block=reference_block or REFERENCE_BLOCK, prepare=unit_rows)
            pairs += [DuplicatePair(getattr(splits, earlier)[match[row]].path, earlier, sample.path, later,
                                    round(float(min(similarity[row], 1.0)), 4))
                      for row, sample in enumerate(getattr(splits, later))]
    return pairs


REFERENCE_BLOCK = 8192  # reference rows compared at once: 42 MB of 1280-wide float32 rows, 17 MB of similarities


def best_matches(queries: np.ndarray, reference: np.ndarray | _Subset, *, block: int = 512, reference_block: int = REFERENCE_BLOCK,
                 prepare=None, top: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `queries`, the index of the most similar row of `reference` and their dot product;
    with `top`, the `top` most similar rows (N x top arrays, most similar first; fewer columns where
    `reference` has fewer rows).

    Both go a block at a time (`block` query rows against `reference_block` reference rows), each
    block made by `prepare` (rows -> float32 rows: e.g. unit vectors of cached float16 features;
    default: the rows as float32), so memory stays at two blocks and block x reference_block
    similarities whatever the number of images. The best match over the blocks is the whole row's
    argmax: the first of equal similarities, as numpy's argmax takes; with `top`, equal similarities
    are ranked by index too (a stable sort of each block, then of the best so far and the block's).
    """
    prepare = prepare or (lambda rows: np.asarray(rows, dtype=np.float32))
    if top is not None:
        return _top_matches(queries, reference, top=top, block=block, reference_block=reference_block, prepare=prepare)
    index = np.zeros(len(queries), dtype=np.int64)
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    for first in range(0, len(reference), reference_block):
        compared = prepare(reference[first : first + reference_block]).T
        for start in range(0, len(queries), block):
            similarity = prepare(queries[start : start + block]) @ compared
            found = similarity.argmax(axis=1)
            value = similarity[np.arange(len(found)), found]
            better = value > best[start : start + block]  # a later block wins only when strictly better
            index[start : start + block][better] = found[better] + first
            best[start : start + block][better] = value[better]
    return index, best


def _top_matches(queries, reference, *, top: int, block: int, reference_block: int,
                 prepare) -> tuple[np.ndarray, np.ndarray]:
    """`best_matches` with `top`: each block's `top` most similar rows merged with the best so far."""
    if isinstance(top, bool) or not isinstance(top, numbers.Integral) or top < 1:
        raise ValueError(f"top must be a whole number of 1 or more, not {top!r}")
    kept = min(int(top), len(reference))
    index = np.zeros((len(queries), kept), dtype=np.int64)
    best = np.full((len(queries), kept), -np.inf, dtype=np.float32)
    for first in range(0, len(reference), reference_block):
        compared = prepare(reference[first : first + reference_block]).T
        for start in range(0, len(queries), block):
            similarity = prepare(queries[start : start + block]) @ compared
            found = np.argsort(-similarity, axis=1, kind="stable")[:, :kept]
            # the best so far (lower indexes) first: a stable sort keeps them ahead of equal later ones
            indexes = np.concatenate([index[start : start + block], found + first], axis=1)
            values = np.concatenate([best[start : start + block], np.take_along_axis(similarity, found, axis=1)], axis=1)
            order = np.argsort(-values, axis=1, kind="stable")[:, :kept]
            index[start : start + block] = np.take_along_axis(indexes, order, axis=1)
            best[start : start + block] = np.take_along_axis(values, order, axis=1)
    return index, best


def centred_unit_rows(mean: np.ndarray | np.floating):
    """A `prepare` for `best_matches`: float32 copies of rows minus `mean` (the train mean; 0 for none),
    scaled to length 1, so that their dot products are the cosine similarities of centred features."""

    def unit_rows(rows: np.ndarray) -> np.ndarray:
        array = float32_rows(rows)
        array -= mean
        array /= np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)
        return array

    return unit_rows


def row_mean(rows: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """The float32 mean of `rows` (N x D) read `chunk` rows at a time: the same sums, in the same
    order, as numpy's mean over a float32 copy of the whole (which adds row after row)."""
    total = np.zeros(rows.shape[1], dtype=np.float32)
    for start in range(0, len(rows), chunk):
        total = np.add.reduce(np.concatenate([total[None], float32_rows(rows, slice(start, start + chunk))]), axis=0)
    return total / len(rows)


# -- Near-identical images within a split (video frames, bursts) -------------------------------


def near_duplicate_groups(
    splits: DataSplits, features: dict[str, FeatureSet], *, threshold: float = NEAR_DUPLICATE_THRESHOLD,
    block: int = 512, reference_block: int = REFERENCE_BLOCK,
) -> list[NearDuplicateGroup]:
    """Groups of near-identical images inside train, and inside val: each group one kept image and the
    images whose centred cosine similarity to it is >= `threshold` (`redundant_rows`, in file order).
    Dropping a group's redundant images leaves one image of each, and every dropped image has its
    near copy, with the same labels, in the split: a near copy under other labels is a conflict to
    resolve by hand, never redundant. Largest groups first."""
    if "train" not in features or not len(features["train"]):
        return []
    prepare = centred_unit_rows(row_mean(features["train"].features))
    groups = []
    for split in ("train", "val"):
        if split not in features or not len(features[split]):
            continue
        samples = getattr(splits, split)
        keeper, similarity = redundant_rows(features[split].features, threshold=threshold, prepare=prepare,
                                            block=block, reference_block=reference_block)
        members: dict[int, list[int]] = defaultdict(list)
        for row in np.flatnonzero(keeper >= 0):
            if samples[row].labels == samples[int(keeper[row])].labels:  # else a label conflict, not redundant
                members[int(keeper[row])].append(int(row))
        groups += [NearDuplicateGroup(split, samples[kept].path, [samples[row].path for row in rows],
                                      [round(float(min(similarity[row], 1.0)), 4) for row in rows])
                   for kept, rows in members.items()]
    return sorted(groups, key=lambda group: (-len(group.redundant), group.split != "train", str(group.kept)))


def redundant_rows(rows: np.ndarray, *, threshold: float, prepare=None, block: int = 512,
                   reference_block: int = REFERENCE_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Which rows repeat an earlier one: greedily in row order, a row is kept unless its similarity (dot
    product of `prepare`d rows) to a row kept before it is >= `threshold`. Returns, for each row, the
    index of the kept row it repeats (-1 for a kept row) and that similarity (0 for a kept row).

    A block of `block` rows at a time: compared with the rows kept so far (`best_matches`, the kept
    rows read from `rows` a reference block at a time), then with each other in order. Memory stays at
    blocks, whatever the number of rows; the comparisons grow with rows x kept rows (few rows kept
    where most are near copies, as in video frames)."""
    prepare = prepare or (lambda part: np.asarray(part, dtype=np.float32))
    keeper = np.full(len(rows), -1, dtype=np.int64)
    similarity = np.zeros(len(rows), dtype=np.float32)
    kept: list[int] = []
    for start in range(0, len(rows), block):
        unit = prepare(rows[start : start + block])
        if kept:
            earlier = np.asarray(kept, dtype=np.int64)
            match, value = best_matches(rows[start : start + block], _Subset(rows, earlier), block=block,
                                        reference_block=reference_block, prepare=prepare)
            repeated = value >= threshold
            keeper[start : start + len(unit)][repeated] = earlier[match[repeated]]
            similarity[start : start + len(unit)][repeated] = value[repeated]
        within = unit @ unit.T
        for row in range(len(unit)):
            if keeper[start + row] >= 0:
                continue
            kept.append(start + row)
            later = np.flatnonzero((within[row, row + 1 :] >= threshold) & (keeper[start + row + 1 : start + len(unit)] < 0))
            keeper[start + row + 1 + later] = start + row
            similarity[start + row + 1 + later] = within[row, row + 1 + later]
    return keeper, similarity


class _Subset:
    """Rows `index` of `rows` (a memory map), read a slice at a time: `best_matches`'s reference."""

    def __init__(self, rows: np.ndarray, index: np.ndarray):
        self.rows, self.index = rows, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, part: slice) -> np.ndarray:
        rows = np.array(self.rows[self.index[part]])
        release_pages(self.rows)  # the copy is taken: the map's pages leave this process (graft.memory)
        return rows


def identical_files(splits: DataSplits) -> list[DuplicatePair]:
    """Pairs of byte-identical files (each copy paired with the first one, in split order).

    Only files whose size another file shares are hashed, so a folder of unique files costs one
    stat per file.
    """
    located = [(sample.path, split) for split in SPLIT_ORDER for sample in getattr(splits, split)]
    by_size: dict[int, list[tuple[Path, str]]] = defaultdict(list)
    for path, split in located:
        by_size[path.stat().st_size].append((path, split))
    pairs = []
    for same_size in by_size.values():
        if len(same_size) < 2:
            continue
        by_hash: dict[str, list[tuple[Path, str]]] = defaultdict(list)
        for path, split in same_size:
            by_hash[hashlib.sha256(path.read_bytes()).hexdigest()].append((path, split))
        for (first, first_split), *copies in (group for group in by_hash.values() if len(group) > 1):
            pairs += [DuplicatePair(first, first_split, path, split, 1.0) for path, split in copies]
    return pairs


# -- Imbalance ---------------------------------------------------------------------------------


def check_imbalance(splits: DataSplits) -> Imbalance:
    """Train images per class; a class is flagged below half the median or a third of the largest."""
    counts = splits.counts("train")
    largest_class = max(counts, key=lambda name: counts[name])
    largest, smallest = counts[largest_class], min(counts.values())
    ratio = largest / max(smallest, 1)
    floor = max(UNDER_MEDIAN * float(np.median(list(counts.values()))), largest / MAX_RATIO)
    flagged = [name for name, count in counts.items() if count < floor]
    weighted = ("graft train weights each class by its count meanwhile (--class-weight auto, the default), so "
                "that a small class counts as much as a large one")
    if not flagged:
        message = f"Balanced: {smallest:,} to {largest:,} train images per class (largest/smallest {ratio:.1f}x)."
    else:
        few = ", ".join(f"{name} ({counts[name]:,})" for name in flagged[:10])
        more = f" and {len(flagged) - 10} more" if len(flagged) > 10 else ""
        them = "it" if len(flagged) == 1 else "them"
        has = "has" if len(flagged) == 1 else "have"
        if largest < FEW_IMAGES:  # a few images apart: the counts, not an alarm
            message = (f"Uneven on little data: {few}{more} {has} fewer train images than {largest_class} "
                       f"({largest:,}), a difference of {largest - smallest:,} images. A few more images of {them} "
                       f"would even it out; {weighted}.")
        else:
            message = (f"Imbalanced: {few}{more} {has} far fewer train images than {largest_class} ({largest:,}; "
                       f"largest/smallest {ratio:.1f}x). Collect more images of {them} (at least "
                       f"{int(np.ceil(floor)):,} each); until then expect lower recall on {them}. {weighted[0].upper()}"
                       f"{weighted[1:]}.")
    return Imbalance(counts=counts, ratio=round(ratio, 3), flagged=flagged, message=message)


# -- Likely mislabelled ------------------------------------------------------------------------


def class_weights(splits: DataSplits, mode: str) -> list[float] | None:
    """--class-weight balanced: train images / (classes x the class's own), scikit-learn's "balanced";
    auto: balanced where the audit's imbalance check flags a class (it raised the rare class's recall
    in every case measured: docs/benchmarks.md, "Accuracy levers"), else none."""
    if mode == "none":
        return None
    if mode == "auto" and not check_imbalance(splits).flagged:
        return None
    counts = list(splits.counts("train").values())
    return [sum(counts) / (len(counts) * max(1, count)) for count in counts]


def label_check_problem(splits: DataSplits, features: dict[str, FeatureSet]) -> str | None:
    """Why the mislabelling check cannot run on these images, or None when it can."""
    labels = np.concatenate([features[split].labels for split in ("train", "val") if split in features])
    counts = np.bincount(labels, minlength=len(splits.classes))
    present = np.flatnonzero(counts)
    if len(present) < 2:
        return "it needs at least two classes with images in train+val."
    rare = [splits.classes[label] for label in present if counts[label] < 2]
    if rare:
        return (f"class{'es' if len(rare) > 1 else ''} {', '.join(rare[:10])} ha{'ve' if len(rare) > 1 else 's'} "
                "a single image in train+val; a classifier cannot learn a class from one image it must also judge. "
                "Add images of it.")
    return None


def out_of_fold_probabilities(
    splits: DataSplits, features: dict[str, FeatureSet], *, seed: int = 0, C: float = MISLABEL_C
) -> tuple[np.ndarray, np.ndarray, list[tuple[Path, str]]]:
    """Class probabilities of every train and val image from a model that never saw it.

    A logistic regression on standardised features is fitted k times, each time without one fold
    (stratified, k = min(5, smallest class)), and predicts that fold: an image's own wrong label
    cannot vouch for it. Returns the probabilities (images x classes), the labels, and each
    image's (path, split).
    """
    used = [split for split in ("train", "val") if split in features and len(features[split])]
    y = np.concatenate([features[split].labels for split in used])
    located: list[tuple[Path, str]] = [(sample.path, split) for split in used for sample in getattr(splits, split)]
    folds = min(5, int(np.bincount(y)[np.unique(y)].min()))
    # A pure function of the cached features and these settings: stored beside the train features,
    # a second run on the same data reads it back instead of fitting k models again.
    parts = {"with": [features[split].meta.get("key") for split in used], "C": C, "seed": seed, "folds": folds,
             "max_iter": 1000, "sklearn": version("scikit-learn")}
    stored = load_derived(features["train"], "oof", parts)
    if stored is not None:
        present = stored["probabilities"]
    else:
        present = _cross_val_probabilities([features[split].features for split in used], y, folds=folds, seed=seed, C=C)
        store_derived(features["train"], "oof", parts, {"probabilities": present})
    probabilities = np.zeros((len(y), len(splits.classes)))
    probabilities[:, np.unique(y)] = present  # its columns are the classes present, in order
    return probabilities, y, located


def _cross_val_probabilities(parts: list[np.ndarray], y: np.ndarray, *, folds: int, seed: int, C: float) -> np.ndarray:
    """scikit-learn's cross_val_predict(method="predict_proba") of a pipeline of StandardScaler and
    LogisticRegression over the rows of `parts` one after another, with the same folds, fits and
    answers, holding one fold's rows at a time: each fold's rows are read from the cached features
    (float32), the scaler fitted a block at a time (graft.memory.standard_scaler) and applied in
    place. cross_val_predict held a float32 copy of every row, each fold's twice, and the scaler's
    float64 copy (100,000 images: 2.6 GB against 0.6). Columns: the classes present, in order."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    codes = np.unique(y, return_inverse=True)[1]  # the classes present as 0..k-1, as cross_val_predict encodes them
    present = np.zeros((len(y), int(codes.max()) + 1))
    with _small_fits():
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        for train, test in splitter.split(np.zeros((len(y), 1)), y):
            rows, scaler = _standardised(parts, train)
            model = LogisticRegression(C=C, max_iter=1000, random_state=seed)
            model.fit(rows, codes[train])
            del rows
            fold = model.predict_proba(scaler.transform(_rows(parts, test), copy=False))
            present[np.ix_(test, model.classes_)] = fold
    return present


@contextmanager
def _small_fits():
    """Where the label checks' cross-validated fits run: memory earlier phases freed given back first
    (these fits' rows come on top of what is held now), one thread, scikit-learn's API-change notices
    silenced. One thread: with torch loaded, two OpenMP runtimes fight over the cores and a fit that
    takes 0.2 s alone took 16 s (2,000 images on 2 cores); these fits are too small to gain from threads."""
    from threadpoolctl import threadpool_limits

    give_back()
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore", category=FutureWarning)
        yield


def _standardised(parts: list[np.ndarray], index: np.ndarray):
    """Rows `index` of `parts` as float32, standardised in place by a StandardScaler fitted on them
    (in blocks: graft.memory.standard_scaler); the rows and the scaler, for the held-out rows."""
    rows = _rows(parts, index)
    scaler = standard_scaler(rows)
    return scaler.transform(rows, copy=False), scaler


def _rows(parts: list[np.ndarray], index: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """float32 rows `index` of `parts` (cached features, memory-mapped) taken one after another."""
    rows = np.empty((len(index), parts[0].shape[1]), dtype=np.float32)
    offset = 0
    for part in parts:
        inside = np.flatnonzero((index >= offset) & (index < offset + len(part)))
        for start in range(0, len(inside), chunk):
            positions = inside[start : start + chunk]
            rows[positions] = float32_rows(part, index[positions] - offset)
        offset += len(part)
    return rows


def confident_disagreements(
    probabilities: np.ndarray, labels: np.ndarray, located: list[tuple[Path, str]], classes: list[str],
    *, confidence: float
) -> list[Suspect]:
    """The images whose most probable class is not their label, at `confidence` or more; most confident first."""
    predicted, top = probabilities.argmax(axis=1), probabilities.max(axis=1)
    suspects = [Suspect(path=located[row][0], split=located[row][1], label=classes[labels[row]],
                        predicted=classes[predicted[row]], confidence=round(float(top[row]), 4))
                for row in np.flatnonzero((predicted != labels) & (top >= confidence))]
    return sorted(suspects, key=lambda suspect: (-suspect.confidence, str(suspect.path)))


# -- Several labels per image ------------------------------------------------------------------


def label_set_problem(splits: DataSplits, features: dict[str, FeatureSet] | None = None) -> str | None:
    """Why the label check cannot run on multi-label train+val images, or None when it can: each
    class it judges needs two images with it and two without."""
    targets = splits.targets(splits.train + splits.val)
    judged = [column for column in range(targets.shape[1])
              if 2 <= targets[:, column].sum() <= len(targets) - 2]
    return None if judged else "no label is on at least two images and off at least two in train+val."


def out_of_fold_label_probabilities(
    splits: DataSplits, features: dict[str, FeatureSet], *, seed: int = 0, C: float = MISLABEL_C
) -> tuple[np.ndarray, np.ndarray, list[tuple[Path, str]]]:
    """Several labels per image: each class's probability for every train and val image from a
    one-vs-rest logistic regression that never saw the image (5 folds, shuffled; one binary fit per
    class on standardised features, as the single-label check fits one multinomial). A class on
    fewer than two images, or missing from fewer than two, is not judged: its column is NaN.
    Returns the probabilities (images x classes), the multi-hot targets, each image's (path, split)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    used = [split for split in ("train", "val") if split in features and len(features[split])]
    samples = [sample for split in used for sample in getattr(splits, split)]
    targets = splits.targets(samples)
    located: list[tuple[Path, str]] = [(sample.path, split) for split in used for sample in getattr(splits, split)]
    folds = min(5, len(samples))
    parts = {"with": [features[split].meta.get("key") for split in used], "C": C, "seed": seed, "folds": folds,
             "targets": [list(targets.shape), hashlib.sha256(targets.astype(np.uint8).tobytes()).hexdigest()],
             "max_iter": 1000, "sklearn": version("scikit-learn")}
    stored = load_derived(features["train"], "oof-multilabel", parts)
    if stored is not None:
        return stored["probabilities"], targets, located
    parts_rows = [features[split].features for split in used]
    probabilities = np.full(targets.shape, np.nan)
    judged = [column for column in range(targets.shape[1]) if 2 <= targets[:, column].sum() <= len(targets) - 2]
    with _small_fits():
        for train, test in KFold(n_splits=folds, shuffle=True, random_state=seed).split(targets):
            rows, scaler = _standardised(parts_rows, train)
            held = scaler.transform(_rows(parts_rows, test), copy=False)
            for column in judged:
                truth = targets[train, column]
                if truth.min() == truth.max():  # this fold's training rows hold one answer only
                    probabilities[test, column] = float(truth[0])
                    continue
                model = LogisticRegression(C=C, max_iter=1000, random_state=seed).fit(rows, truth)
                probabilities[test, column] = model.predict_proba(held)[:, 1]
    store_derived(features["train"], "oof-multilabel", parts, {"probabilities": probabilities})
    return probabilities, targets, located


def confident_label_disagreements(
    probabilities: np.ndarray, targets: np.ndarray, located: list[tuple[Path, str]], classes: list[str],
    *, confidence: float
) -> list[Suspect]:
    """(image, class) pairs a classifier that never saw the image contradicts at `confidence` or more:
    a label given that it is that sure is absent (`label` the class, `predicted` "not CLASS"), or a
    label not given that it is that sure is there (`label` "not CLASS", `predicted` the class).
    Most confident first."""
    suspects = []
    for row, column in zip(*np.nonzero(~np.isnan(probabilities)), strict=True):
        present, probability = bool(targets[row, column]), float(probabilities[row, column])
        sure = 1.0 - probability if present else probability
        if sure >= confidence:
            name = classes[column]
            suspects.append(Suspect(path=located[row][0], split=located[row][1],
                                    label=name if present else f"not {name}",
                                    predicted=f"not {name}" if present else name, confidence=round(sure, 4)))
    return sorted(suspects, key=lambda suspect: (-suspect.confidence, str(suspect.path), suspect.label))
