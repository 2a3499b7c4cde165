"""Similar images: the training images nearest to an image, by embedding.

`similar(SOURCE, images)` answers, for each image, which training images look most like it: the `count`
with the highest cosine similarity of the frozen backbone's features, each with its class, similarity
and path. The features are the ones graft caches (graft.features.backbone_features), centred on the
training images' mean before the cosine, as the audit's duplicate search and graft.unknown's knn score
do (every feature of a ReLU network is positive: uncentred, unrelated images look alike). A
similarity of 1 is the same picture; the audit counts two images of one split as near-identical from
its measured NEAR_DUPLICATE_THRESHOLD (docs/audit.md).

SOURCE is a run folder (graft train's: the run's backbone, weights and image size, and its training
split as training split it, the features read from the cache where training put them, else extracted),
or a data folder (the training images as graft.data.find_data splits them, with `backbone`, graft's
default unless given). The search goes a block of training images at a time (graft.audit.checks.
best_matches), so memory does not grow with the training images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import GraftError

if TYPE_CHECKING:
    from .data.discover import DataSplits, Sample
    from .runtime import Runtime

DEFAULT_COUNT = 5


@dataclass(frozen=True)
class Match:
    """A training image like the query: its `rank` (1 the most similar), file, class (several classes
    joined by ", " for multi-label data) and cosine similarity of the centred features."""

    rank: int
    path: Path
    label: str
    similarity: float

    def to_dict(self) -> dict:
        return {"rank": self.rank, "path": str(self.path), "label": self.label, "similarity": round(self.similarity, 4)}


@dataclass(frozen=True)
class SimilarImages:
    """One query image and its `matches`, most similar first; an image that cannot be read has no
    matches and its `error` says why."""

    image: Path
    matches: list[Match]
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"image": str(self.image), "error": self.error}
        return {"image": str(self.image), "matches": [match.to_dict() for match in self.matches]}


def similar(
    source: str | Path,
    images: Sequence[str | Path],
    *,
    count: int = DEFAULT_COUNT,
    backbone: str | None = None,
    weights: str = "imagenet",
    img_size: int | None = None,
    val_split: float = 0.2,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    precision: str = "auto",
    progress: bool = True,
) -> list[SimilarImages]:
    """For each file in `images`, the `count` most similar training images of `source` (a run folder or
    a data folder), most similar first.

    From a run folder, the run fixes the backbone, weights, image size, split and runtime: `backbone`,
    `weights`, `img_size`, `val_split` and `seed` are for a data folder only (a GraftError says so where
    one is given with a run). `cache_dir` is graft's cache (graft.runtime.use_cache_dir). A GraftError
    names a missing image or folder, a `count` under 1, a source that is neither, a run whose training
    data is gone (its features are found by its files), and images none of which can be read; an image
    that cannot be read among readable ones is answered in its place with its `error` (as predict does).
    """
    from .runtime import use_cache_dir
    from .suggest import check_count

    count = check_count(count, "training images to list per image")
    queries, unreadable = _query_images(images)
    with use_cache_dir(cache_dir):
        if _is_run(source):
            given = [flag for flag, value, default in (("--backbone", backbone, None), ("--weights", weights, "imagenet"),
                                                       ("--img-size", img_size, None), ("--val-split", val_split, 0.2),
                                                       ("--seed", seed, 0)) if value != default]
            if given:
                raise GraftError(f"{source} is a run folder, whose backbone, image size and split are its own: "
                                 f"leave out {', '.join(given)} (they are for a data folder).")
            splits, net, runtime = _from_run(source, progress=progress)
            runtime = runtime if workers is None else runtime.but(workers=workers)
        else:
            splits, net, runtime = _from_data(source, backbone=backbone, weights=weights, img_size=img_size,
                                              val_split=val_split, seed=seed, workers=workers, precision=precision,
                                              progress=progress)
        found = iter(nearest(splits, net, [path for path in queries if path not in unreadable], count=count,
                             runtime=runtime))
    return [SimilarImages(path, [], error=unreadable[path]) if path in unreadable else next(found) for path in queries]


def nearest(splits: DataSplits, backbone, images: Sequence[Path], *, count: int, runtime: Runtime) -> list[SimilarImages]:
    """The `count` training images of `splits` most similar to each of `images` under `backbone`'s
    features (both through graft's feature cache, extracted with `runtime` where absent)."""
    from .audit.checks import best_matches, centred_unit_rows, row_mean
    from .data.discover import Sample
    from .features import backbone_features

    if not splits.train:
        raise GraftError(f"{splits.source}: no training images to compare with.")
    train = backbone_features(backbone, splits.train, split="train", runtime=runtime)
    asked = backbone_features(backbone, [Sample(path, -1) for path in images], split="similar", runtime=runtime)
    index, similarity = best_matches(asked.features, train.features, top=count,
                                     prepare=centred_unit_rows(row_mean(train.features)))
    return [SimilarImages(image, [Match(rank, splits.train[column].path, _label(splits, splits.train[column]),
                                        float(min(value, 1.0)))
                                  for rank, (column, value) in enumerate(zip(index[row], similarity[row]), start=1)])
            for row, image in enumerate(images)]


def _label(splits: DataSplits, sample: Sample) -> str:
    if sample.label >= 0:
        return splits.classes[sample.label]
    return ", ".join(splits.classes[label] for label in sample.labels)


def _query_images(images: Sequence[str | Path]) -> tuple[list[Path], dict[Path, str]]:
    """The query images as paths, each an existing file (else a GraftError naming it), and the reason
    of each that cannot be read as an image; a GraftError where none can."""
    from .data.discover import _unreadable

    paths = [Path(image) for image in images]
    if not paths:
        raise GraftError("No image given: name one or more image files (graft similar SOURCE IMAGE ...).")
    for path in paths:
        if not path.exists():
            raise GraftError(f"{path} does not exist: give the path of an image file.")
        if not path.is_file():
            raise GraftError(f"{path} is not a file: give the path of an image file (graft similar takes images, "
                             "not folders).")
    unreadable = {Path(path): reason for path, reason in _unreadable(paths, None).items()}
    if len(unreadable) == len(set(paths)):
        path, reason = next(iter(unreadable.items()))
        raise GraftError(f"{path} cannot be read as an image: {reason}")
    return paths, unreadable


def _is_run(source: str | Path) -> bool:
    from .record import RECORD_FILE

    return (Path(source) / RECORD_FILE).is_file()


def _from_run(run: str | Path, *, progress: bool):
    """A run folder's training split, its backbone (keyed in the cache as training keyed it) and runtime."""
    from .classifier import load
    from .data.discover import find_data
    from .suggest import run_backbone

    classifier = load(run)
    record = classifier.record
    if record is None or record.data is None or not record.data.source:
        raise GraftError(f"{run}: its graft.json does not name its training data, whose features graft similar "
                         "compares with; train it again with graft train, or give the data folder instead.")
    source = Path(record.data.source)
    if not source.exists():
        raise GraftError(f"The training data of {run}, {source}, is not there any more, and graft finds the run's "
                         "training features by those files; put the data back at that path, or give a data folder "
                         "instead of the run.")
    config = record.config
    splits = find_data(source, val_split=config.data.val_split, seed=config.data.seed, task=config.data.task)
    return splits, run_backbone(classifier), config.runtime.resolve(progress=progress)


def _from_data(data: str | Path, *, backbone: str | None, weights: str, img_size: int | None, val_split: float,
               seed: int, workers: int | None, precision: str, progress: bool):
    """A data folder's training split, the backbone asked for (graft's default if none) and a runtime."""
    from .backbones import create_backbone
    from .config import DEFAULT_BACKBONE
    from .data.discover import find_data
    from .runtime import Runtime

    if not Path(data).exists():
        raise GraftError(f"{data} does not exist: give a run folder (graft train's) or a data folder.")
    splits = find_data(data, val_split=val_split, seed=seed, task="auto")
    net = create_backbone(backbone or DEFAULT_BACKBONE, weights=weights, img_size=img_size)
    return splits, net, Runtime.resolve(precision=precision, workers=workers, progress=progress)
