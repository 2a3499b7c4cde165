"""`audit`: from a data folder to an `AuditResult`; `audit_features` when the features are at hand."""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.discover import DataSplits
from ..errors import GraftError
from ..features import FeatureSet
from ..runtime import Runtime
from .checks import (
    DUPLICATE_THRESHOLD,
    MISLABEL_CONFIDENCE,
    NEAR_DUPLICATE_THRESHOLD,
    SPLIT_ORDER,
    check_imbalance,
    confident_disagreements,
    confident_label_disagreements,
    find_duplicates,
    label_check_problem,
    label_set_problem,
    near_duplicate_groups,
    out_of_fold_label_probabilities,
    out_of_fold_probabilities,
)
from .result import AuditResult

if TYPE_CHECKING:
    from ..backbones import Backbone


def audit_features(
    splits: DataSplits,
    features: dict[str, FeatureSet],
    *,
    duplicate_threshold: float = DUPLICATE_THRESHOLD,
    mislabel_confidence: float = MISLABEL_CONFIDENCE,
    seed: int = 0,
    near_duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD,
) -> AuditResult:
    """Audit `splits` given plain-view (not augmented) backbone features of each split.

    `features` maps "train", "val" and optionally "test" to the `FeatureSet` whose rows are the
    samples of that split, in the order of `splits.train`, `splits.val`, `splits.test`. Images whose
    features have cosine similarity >= `duplicate_threshold` across splits are duplicates; within train,
    and within val, >= `near_duplicate_threshold` near-identical (groups of which all but one could go).
    """
    _check_thresholds(duplicate_threshold, mislabel_confidence, near_duplicate_threshold)
    for split, feature_set in features.items():
        if split not in SPLIT_ORDER or len(feature_set) != len(getattr(splits, split)):
            raise ValueError(f"features[{split!r}] must have one row per sample of splits.{split}")
    if "train" not in features:
        raise ValueError("features must include the 'train' split")

    notes = []
    if not splits.test:
        notes.append("No test split: duplicates were looked for between train and val only.")
    if splits.skipped:
        notes.append(f"{len(splits.skipped):,} files were skipped (unreadable or not images) and not audited.")
    settings = {
        "source": splits.source,
        "images": {split: len(getattr(splits, split)) for split in SPLIT_ORDER},
        "duplicate_threshold": duplicate_threshold,
        "near_duplicate_threshold": near_duplicate_threshold,
        "mislabel_confidence": mislabel_confidence,
        "seed": seed,
    }
    several = splits.task == "multilabel"
    mislabelled, skipped_reason = [], (label_set_problem if several else label_check_problem)(splits, features)
    if several and skipped_reason is None:  # each (image, class) pair judged: labels likely wrong or missing
        probabilities, targets, located = out_of_fold_label_probabilities(splits, features, seed=seed)
        mislabelled = confident_label_disagreements(probabilities, targets, located, splits.classes,
                                                    confidence=mislabel_confidence)
        judged = ~np.isnan(probabilities)
        settings["label_check_accuracy"] = round(float(((probabilities >= 0.5) == targets.astype(bool))[judged].mean()), 4)
        settings["task"] = "multilabel"
    elif skipped_reason is None:
        probabilities, labels, located = out_of_fold_probabilities(splits, features, seed=seed)
        mislabelled = confident_disagreements(probabilities, labels, located, splits.classes,
                                              confidence=mislabel_confidence)
        # How often the judge is right tells how much its disagreements weigh.
        settings["label_check_accuracy"] = round(float((probabilities.argmax(axis=1) == labels).mean()), 4)
    return AuditResult(
        duplicates=find_duplicates(splits, features, threshold=duplicate_threshold),
        imbalance=check_imbalance(splits),
        mislabelled=mislabelled,
        notes=notes,
        label_check_skipped=skipped_reason,
        settings=settings,
        near_duplicates=near_duplicate_groups(splits, features, threshold=near_duplicate_threshold),
    )


def audit(
    data: str | Path,
    *,
    backbone: str = "tf_efficientnet_lite0",
    weights: str = "imagenet",
    img_size: int | None = None,
    val_split: float = 0.2,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    precision: str = "auto",
    progress: bool = True,
    duplicate_threshold: float = DUPLICATE_THRESHOLD,
    mislabel_confidence: float = MISLABEL_CONFIDENCE,
    near_duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD,
) -> AuditResult:
    """Find the data, compute (or reuse cached) backbone features of every split, and audit them.

    The features are the same plain-view ones training caches, so auditing before or after a
    `graft train` with the same backbone and image size costs no second pass over the images.
    """
    from ..runtime import use_cache_dir

    _check_thresholds(duplicate_threshold, mislabel_confidence, near_duplicate_threshold)  # before minutes of extraction
    runtime = Runtime.resolve(precision=precision, workers=workers, progress=progress)
    with use_cache_dir(cache_dir):  # every file the audit caches (features, graphs, the readability memo)
        splits, features, net = plain_features(data, backbone=backbone, weights=weights, img_size=img_size,
                                               val_split=val_split, seed=seed, runtime=runtime)
    result = audit_features(splits, features, duplicate_threshold=duplicate_threshold,
                            mislabel_confidence=mislabel_confidence, seed=seed,
                            near_duplicate_threshold=near_duplicate_threshold)
    result.settings.update(backbone=backbone, weights=net.weights_source, img_size=net.data_config.image_size)
    return result


def plain_features(
    data: str | Path, *, backbone: str, weights: str = "imagenet", img_size: int | None = None,
    val_split: float = 0.2, seed: int = 0, runtime: Runtime,
) -> tuple[DataSplits, dict[str, FeatureSet], Backbone]:
    """The splits of `data`, the plain-view features of each non-empty split (extracted with
    `runtime`, into graft's cache: graft.runtime.use_cache_dir picks another), and the backbone."""
    from ..backbones import create_backbone
    from ..data.discover import find_data
    from ..features import FeatureCache, backbone_features

    splits = find_data(data, val_split=val_split, seed=seed, task="auto")  # checks images with its own threads, as train does
    net = create_backbone(backbone, weights=weights, img_size=img_size)
    cache = FeatureCache()
    features = {
        split: backbone_features(net, getattr(splits, split), split=split, cache=cache, runtime=runtime)
        for split in SPLIT_ORDER if getattr(splits, split)
    }
    return splits, features, net


def _check_thresholds(duplicate_threshold: float, mislabel_confidence: float,
                      near_duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD) -> None:
    """All are fractions: similarities up to 1 (identical features), a probability below 1."""
    for name, value, default, top_allowed in (("duplicate_threshold", duplicate_threshold, DUPLICATE_THRESHOLD, True),
                                              ("near_duplicate_threshold", near_duplicate_threshold,
                                               NEAR_DUPLICATE_THRESHOLD, True),
                                              ("mislabel_confidence", mislabel_confidence, MISLABEL_CONFIDENCE, False)):
        is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not is_number or not (0 < value < 1 or (top_allowed and value == 1)):
            raise GraftError(f"{name} {value!r} (--{name.replace('_', '-')}) must be a number between 0 and 1, "
                             f"e.g. the default {default}.")
