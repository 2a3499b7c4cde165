"""From what cosine similarity are two images of one split near-identical (video frames, bursts)?

    python -m benchmarks.calibration.near_duplicates [--shared ../shared/datasets] [--cache-dir DIR]
        [--work DIR] [--sources 30] [--frames 4] [--tune daisy,dandelion,roses] [--key near_duplicates]

Frames: from each of the first `--sources` photos (path order) of each class of flowers-dev's train/,
`--frames` altered copies, as consecutive frames of a video differ: each a crop of 88-100% of the
photo's side moved by up to 4% of it (a small shift and zoom), resized back, brightness times
0.85-1.15, saved as JPEG at quality 60-95 (seeded per photo). The photo and its frames are one
source. Near-duplicate pairs: two images of one source (the photo and a frame, or two frames); distinct
pairs: two images of different sources of the same class (distinct photos of one class: the hard
case; other classes are further apart). Features: Lite0 with its ImageNet weights at its 224 px,
by graft's extraction and cache (graft.features, the engine graft chooses), centred on the mean of the
set's photos and frames before the cosine, as the audit centres on the train mean.

The threshold is chosen on the `--tune` classes: the one (on a 0.005 grid from 0.5 to 1) with the
best F1 of "near-duplicate" over their pairs. It is checked on the other flower classes and on
cifar10-dev (the first `--cifar-sources` train images of each class, 32 px, made into frames the same
way: a few pixels' shift), each on its own: pairwise precision and recall at the chosen threshold,
and what the audit's grouping (graft.audit.checks.redundant_rows, in file order) would drop: the
share of the images it marks redundant whose kept image is of the same source (precision), and the
share of the frames that could go (all but one per source) it marks (recall).
Then the held-out sets' pairwise precision and recall at thresholds around it. Prints markdown tables
and stores them under KEY in benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from .._results import provenance, record
from .._runs import BACKBONE, SHARED_DATASETS, class_folders, image_files

GRID = np.round(np.arange(0.5, 1.0001, 0.005), 3)


def make_frames(photo: Path, folder: Path, frames: int, seed: int) -> list[Path]:
    """The photo's `frames` altered copies in `folder` (see the module's text)."""
    rng = np.random.default_rng(seed)
    image = Image.open(photo).convert("RGB")
    width, height = image.size
    made = []
    for number in range(frames):
        side = rng.uniform(0.88, 1.0)
        w, h = width * side, height * side
        x = np.clip((width - w) / 2 + rng.uniform(-0.04, 0.04) * width, 0, width - w)
        y = np.clip((height - h) / 2 + rng.uniform(-0.04, 0.04) * height, 0, height - h)
        frame = image.crop((round(x), round(y), round(x + w), round(y + h))).resize((width, height), Image.BICUBIC)
        frame = ImageEnhance.Brightness(frame).enhance(rng.uniform(0.85, 1.15))
        path = folder / f"{photo.stem}-frame{number}.jpg"
        folder.mkdir(parents=True, exist_ok=True)
        frame.save(path, quality=int(rng.integers(60, 96)))
        made.append(path)
    return made


def build(source: Path, work: Path, *, sources: int, frames: int) -> dict[str, list[tuple[Path, int]]]:
    """Per class of `source` (class folders), its images and each one's source number (the photo's
    own first, then its frames), the frames written under `work`."""
    built: dict[str, list[tuple[Path, int]]] = {}
    for index, folder in enumerate(class_folders(source)):
        images: list[tuple[Path, int]] = []
        for number, photo in enumerate(image_files(folder)[:sources]):
            images.append((photo, number))
            images += [(path, number) for path in make_frames(photo, work / folder.name, frames, seed=1000 * index + number)]
        built[folder.name] = images
    return built


def features(built: dict[str, list[tuple[Path, int]]], cache_dir: Path | None) -> dict[str, np.ndarray]:
    """Each class's features (float32) by graft's extraction and cache."""
    from graft.backbones import create_backbone
    from graft.data.discover import Sample
    from graft.features.extract import backbone_features
    from graft.runtime import Runtime, use_cache_dir

    with use_cache_dir(cache_dir):
        backbone = create_backbone(BACKBONE)
        runtime = Runtime.resolve()
        return {name: np.asarray(backbone_features(backbone, [Sample(path, 0) for path, _ in images], split=name,
                                                   runtime=runtime).features, dtype=np.float32)
                for name, images in built.items()}


def unit(rows: np.ndarray, mean: np.ndarray) -> np.ndarray:
    centred = rows - mean
    return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)


def pairs(rows: np.ndarray, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of images of one class: their cosine similarity and whether they share a source."""
    similarity = rows @ rows.T
    upper = np.triu_indices(len(rows), k=1)
    return similarity[upper], owners[upper[0]] == owners[upper[1]]


def precision_recall(similarity: np.ndarray, same: np.ndarray, threshold: float) -> tuple[float, float]:
    flagged = similarity >= threshold
    hits = int((flagged & same).sum())
    return hits / max(1, int(flagged.sum())), hits / max(1, int(same.sum()))


def f1(similarity: np.ndarray, same: np.ndarray, threshold: float) -> float:
    precision, recall = precision_recall(similarity, same, threshold)
    return 2 * precision * recall / max(precision + recall, 1e-12)


def dropped(rows: np.ndarray, owners: np.ndarray, threshold: float) -> tuple[float, float, int, int]:
    """What the audit's grouping drops: precision, recall, images marked, frames that could go."""
    from graft.audit.checks import redundant_rows

    keeper, _ = redundant_rows(rows, threshold=threshold)
    marked = np.flatnonzero(keeper >= 0)
    right = int((owners[marked] == owners[keeper[marked]]).sum())
    could_go = len(owners) - len(np.unique(owners))
    return right / max(1, len(marked)), right / max(1, could_go), len(marked), could_go


def evaluate(name: str, rows: list[np.ndarray], owners: list[np.ndarray], threshold: float) -> dict:
    """The figures of one set of classes at `threshold`: pairs within each class, the audit's grouping per class."""
    found = [pairs(part, owner) for part, owner in zip(rows, owners)]
    similarity, same = np.concatenate([s for s, _ in found]), np.concatenate([m for _, m in found])
    precision, recall = precision_recall(similarity, same, threshold)
    drops = [dropped(part, owner, threshold) for part, owner in zip(rows, owners)]
    marked, could_go = sum(item[2] for item in drops), sum(item[3] for item in drops)
    right = sum(round(item[0] * item[2]) for item in drops)
    return {"set": name, "images": sum(map(len, rows)), "near_pairs": int(same.sum()),
            "distinct_pairs": int((~same).sum()), "precision": round(precision, 4), "recall": round(recall, 4),
            "near_lowest": round(float(similarity[same].min()), 4),
            "distinct_highest": round(float(similarity[~same].max()), 4),
            "drop_precision": round(right / max(1, marked), 4), "drop_recall": round(right / max(1, could_go), 4),
            "marked": marked, "could_go": could_go}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED_DATASETS)
    parser.add_argument("--cache-dir", type=Path, default=None, help="graft's cache (default: graft's own)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "graft-near-duplicates",
                        help="where the frames are written (kept: a second run reads their features from the cache)")
    parser.add_argument("--sources", type=int, default=30, help="photos per flower class made into frames")
    parser.add_argument("--cifar-sources", type=int, default=10, help="cifar10-dev images per class made into frames")
    parser.add_argument("--frames", type=int, default=4, help="frames per photo")
    parser.add_argument("--tune", default="daisy,dandelion,roses", help="the flower classes that choose the threshold")
    parser.add_argument("--key", default="near_duplicates")
    args = parser.parse_args()
    about = provenance(parameters={**vars(args), "shared": str(args.shared), "cache_dir": str(args.cache_dir),
                                   "work": str(args.work)})

    flowers = build(args.shared / "flowers-dev" / "train", args.work / "flowers", sources=args.sources,
                    frames=args.frames)
    cifar = build(args.shared / "cifar10-dev" / "train", args.work / "cifar", sources=args.cifar_sources,
                  frames=args.frames)
    flower_x, cifar_x = features(flowers, args.cache_dir), features(cifar, args.cache_dir)
    tune = args.tune.split(",")
    check = [name for name in flowers if name not in tune]

    flower_mean = np.concatenate(list(flower_x.values())).mean(axis=0)
    cifar_mean = np.concatenate(list(cifar_x.values())).mean(axis=0)

    def unit_rows(x: dict[str, np.ndarray], mean: np.ndarray, built, names) -> tuple[list, list]:
        return ([unit(x[name], mean).astype(np.float32) for name in names],
                [np.array([owner for _, owner in built[name]]) for name in names])

    tune_rows, tune_owners = unit_rows(flower_x, flower_mean, flowers, tune)
    tuned = [pairs(rows, owners) for rows, owners in zip(tune_rows, tune_owners)]
    similarity, same = np.concatenate([s for s, _ in tuned]), np.concatenate([m for _, m in tuned])
    scores = [f1(similarity, same, threshold) for threshold in GRID]
    threshold = float(GRID[int(np.argmax(scores))])

    results = [evaluate("tune: " + ", ".join(tune), tune_rows, tune_owners, threshold)]
    check_rows, check_owners = unit_rows(flower_x, flower_mean, flowers, check)
    results.append(evaluate("check: " + ", ".join(check), check_rows, check_owners, threshold))
    results += [evaluate(f"check: {name}", [rows], [owners], threshold)
                for name, rows, owners in zip(check, check_rows, check_owners)]
    cifar_rows, cifar_owners = unit_rows(cifar_x, cifar_mean, cifar, list(cifar))
    results.append(evaluate("check: cifar10-dev (10 classes)", cifar_rows, cifar_owners, threshold))

    print(f"Chosen threshold (best F1 on {', '.join(tune)}): {threshold}\n")
    print("| set | images | near pairs | distinct pairs | precision | recall | lowest near | highest distinct "
          "| dropped: precision | dropped: recall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in results:
        print(f"| {row['set']} | {row['images']} | {row['near_pairs']} | {row['distinct_pairs']} | {row['precision']:.3f} "
              f"| {row['recall']:.3f} | {row['near_lowest']:.3f} | {row['distinct_highest']:.3f} "
              f"| {row['drop_precision']:.3f} ({row['marked']}) | {row['drop_recall']:.3f} (of {row['could_go']}) |")
    sweep = []
    print("\nAround it, pairs within a class of the held-out sets (precision / recall):\n")
    print("| threshold | flowers: " + ", ".join(check) + " | cifar10-dev |")
    print("|---|---|---|")
    for candidate in (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
        row = {"threshold": candidate}
        for name, rows, owners in (("flowers", check_rows, check_owners), ("cifar", cifar_rows, cifar_owners)):
            found = [pairs(part, owner) for part, owner in zip(rows, owners)]
            precision, recall = precision_recall(np.concatenate([s for s, _ in found]),
                                                 np.concatenate([m for _, m in found]), candidate)
            row[name] = [round(precision, 4), round(recall, 4)]
        sweep.append(row)
        print(f"| {candidate} | {row['flowers'][0]:.3f} / {row['flowers'][1]:.3f} "
              f"| {row['cifar'][0]:.3f} / {row['cifar'][1]:.3f} |")
    record(args.key, {"sweep": sweep, "threshold": threshold, "tuned_on": tune, "checked_on": [*check, "cifar10-dev"],
                      "f1_on_tune": round(float(max(scores)), 4), "sets": results}, about)


if __name__ == "__main__":
    main()
