"""Measure the audit's thresholds on real photos: false alarms on clean data, recall of planted problems.

    python -m benchmarks.calibration.audit_calibrate ../shared/datasets/cifar10-dev --per-class 200 --img-size 128

From DATA (train/ and test/ class folders) it copies `--per-class` train and `--test-per-class`
test images of each class into a clean subset, and a second subset that also holds planted
problems: copies of train images in test/ (byte copy, JPEG re-encoded at quality 50, resized to
75%, cropped to 94% and 85% of the side, mirrored), and `--flips` train images moved to the folder
of another class. It prints what each candidate threshold flags on both, so that docs/audit.md can
say why the defaults are what they are.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from sklearn.metrics import log_loss

from graft.audit.checks import closest_pairs, confident_disagreements, out_of_fold_probabilities
from graft.audit.pipeline import plain_features
from graft.data.discover import find_data
from graft.data.images import load_image
from graft.runtime import Runtime, use_cache_dir

SIMILARITIES = (0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.98)
CONFIDENCES = (0.7, 0.8, 0.9, 0.95, 0.98)
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1)
KINDS = ("copy", "jpeg-q50", "resized-75%", "crop-94%", "crop-85%", "mirrored")  # see _variants


def _variants(image: Image.Image) -> dict[str, Image.Image | None]:
    """The altered copies planted in test/; None means a byte-for-byte copy of the file."""
    width, height = image.size

    def crop(side: float) -> Image.Image:
        w, h = round(width * side), round(height * side)
        return image.crop((width - w, 0, width, h))  # off-centre, as a re-framed photo would be

    return {
        "copy": None,
        "jpeg-q50": image,
        "resized-75%": image.resize((round(width * 0.75), round(height * 0.75)), Image.BICUBIC),
        "crop-94%": crop(0.94),
        "crop-85%": crop(0.85),
        "mirrored": ImageOps.mirror(image),
    }


def build_subsets(source: Path, root: Path, *, per_class: int, test_per_class: int, flips: int, seed: int):
    """A clean subset of `source`, and a copy with `flips` relabelled train images; returns the flipped paths."""
    rng = random.Random(seed)
    clean, planted = root / "clean", root / "planted"
    classes = sorted(folder.name for folder in (source / "train").iterdir() if folder.is_dir())
    for split, count in (("train", per_class), ("test", test_per_class)):
        for name in classes:
            files = sorted((source / split / name).iterdir())
            for file in rng.sample(files, min(count, len(files))):
                for target in (clean, planted):
                    (target / split / name).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, target / split / name / file.name)
    flipped = []
    train_files = sorted((planted / "train").glob("*/*"))
    for file in rng.sample(train_files, flips):
        wrong = rng.choice([name for name in classes if name != file.parent.name])
        target = planted / "train" / wrong / f"flipped-from-{file.parent.name}-{file.name}"
        file.rename(target)
        flipped.append(target)
    return clean, planted, flipped


def plant_duplicates(planted: Path, train_paths: list[Path], *, per_kind: int, seed: int) -> dict[Path, tuple[str, Path]]:
    """Altered copies of train images, put in test/ under the same class; returns {copy: (kind, original)}."""
    rng = random.Random(seed + 1)
    kinds: dict[Path, tuple[str, Path]] = {}
    for index, original in enumerate(rng.sample(train_paths, per_kind * len(KINDS))):
        kind = KINDS[index % len(KINDS)]  # each original gets one kind
        target = save_variant(original, kind, planted / "test" / original.parent.name / f"planted-{index:03d}-{kind}")
        kinds[target] = (kind, original)
    return kinds


def save_variant(original: Path, kind: str, stem: Path) -> Path:
    """Write the `kind` variant of `original` at `stem` + the right suffix; returns its path."""
    variant = _variants(load_image(original))[kind]
    if variant is None:
        target = stem.with_suffix(original.suffix)
        shutil.copy2(original, target)
    else:
        target = stem.with_suffix(".jpg")
        variant.save(target, quality=50 if kind == "jpeg-q50" else 90)
    return target


def _quantiles(values) -> dict[str, float]:
    values = np.asarray(values)
    return {f"q{q:g}": round(float(np.quantile(values, q / 100)), 4) for q in (50, 90, 99, 99.9)} | {
        "max": round(float(values.max()), 4)}


def measure(args) -> dict:
    root = Path(tempfile.mkdtemp(prefix="graft-calibrate-"))
    with use_cache_dir(root / "cache"):
        return _measure(args, root)


def _measure(args, root: Path) -> dict:
    options = {"backbone": args.backbone, "img_size": args.img_size, "seed": args.seed,
               "runtime": Runtime.resolve(progress=False)}
    clean, planted, flipped = build_subsets(Path(args.data), root, per_class=args.per_class,
                                            test_per_class=args.test_per_class, flips=args.flips, seed=args.seed)
    report: dict = {"settings": vars(args)}

    # Clean data: every flag is a false alarm (or a real problem of CIFAR-10 itself).
    clean_splits, clean_features, _ = plain_features(clean, **options)
    report["images"] = {split: len(getattr(clean_splits, split)) for split in ("train", "val", "test")}
    for centre in (True, False):
        pairs = closest_pairs(clean_splits, clean_features, centre=centre)
        name = "centred" if centre else "raw"
        similarities = [pair.similarity for pair in pairs]
        report[f"clean_best_match_{name}"] = _quantiles(similarities)
        report[f"clean_pairs_{name}"] = {t: int(sum(s >= t for s in similarities)) for t in SIMILARITIES}
        top = sorted(pairs, key=lambda pair: -pair.similarity)[:10]  # CIFAR-10 has real near duplicates: look
        report[f"clean_top_pairs_{name}"] = [(str(p.path_a.relative_to(clean)), str(p.path_b.relative_to(clean)),
                                              p.similarity, thumbnail_correlation(p.path_a, p.path_b)) for p in top]
        report[f"clean_top50_thumbnail_{name}"] = _quantiles(
            [thumbnail_correlation(p.path_a, p.path_b) for p in sorted(pairs, key=lambda p: -p.similarity)[:50]])
    clean_oof = {C: out_of_fold_probabilities(clean_splits, clean_features, seed=args.seed, C=C) for C in C_GRID}
    report["clean_oof"] = {C: _label_quality(oof, clean_splits.classes) for C, oof in clean_oof.items()}

    # Planted problems: recall per kind, and flags on the rest.

    train_paths = [sample.path for sample in find_data(planted, seed=args.seed, check_images=False).train
                   if "flipped-from" not in sample.path.name]
    kinds = plant_duplicates(planted, train_paths, per_kind=args.per_kind, seed=args.seed)
    planted_splits, planted_features, _ = plain_features(planted, **options)
    kind_names = sorted({kind for kind, _ in kinds.values()})
    for centre in (True, False):
        name = "centred" if centre else "raw"
        pairs = closest_pairs(planted_splits, planted_features, centre=centre)
        # A planted copy is found when its best train match is its original.
        hits = [pair for pair in pairs if pair.path_b in kinds and pair.path_a == kinds[pair.path_b][1]]
        others = [pair for pair in pairs if pair.path_b not in kinds]
        report[f"planted_similarity_{name}"] = {
            kind: _quantiles([pair.similarity for pair in hits if kinds[pair.path_b][0] == kind]) for kind in kind_names}
        report[f"planted_found_{name}"] = {
            t: {kind: sum(pair.similarity >= t for pair in hits if kinds[pair.path_b][0] == kind) for kind in kind_names}
            for t in SIMILARITIES}
        report[f"planted_other_pairs_{name}"] = {t: sum(pair.similarity >= t for pair in others) for t in SIMILARITIES}
        report[f"planted_thumbnail_{name}"] = {
            kind: _quantiles([thumbnail_correlation(pair.path_a, pair.path_b) for pair in pairs
                              if pair.path_b in kinds and kinds[pair.path_b][0] == kind
                              and pair.path_a == kinds[pair.path_b][1]] or [0.0]) for kind in kind_names}
    flipped_set = set(flipped)
    report["flips"] = len(flipped)
    for C in C_GRID:
        oof = out_of_fold_probabilities(planted_splits, planted_features, seed=args.seed, C=C)
        report.setdefault("planted_mislabel", {})[C] = _label_quality(oof, planted_splits.classes) | {
            t: {"flips_found": sum(s.path in flipped_set for s in flagged),
                "others_flagged": sum(s.path not in flipped_set for s in flagged)}
            for t in CONFIDENCES
            for flagged in [confident_disagreements(*oof, planted_splits.classes, confidence=t)]}
    report["photos"] = photo_variants(root / "photos", options)
    shutil.rmtree(root, ignore_errors=True)
    return report


PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "colorwheel",
          "retina", "cell", "brick", "grass", "gravel", "camera", "coins", "page", "moon", "horse", "logo")


def photo_variants(root: Path, options: dict) -> dict:
    """The same altered copies made from full-size photos (scikit-image's sample images)."""
    from skimage import data

    for name in PHOTOS:
        (root / "train" / name).mkdir(parents=True)
        (root / "val" / name).mkdir(parents=True)
        Image.fromarray(getattr(data, name)()).convert("RGB").save(root / "train" / name / "original.png")
    kinds = {}
    for name in PHOTOS:
        original = root / "train" / name / "original.png"
        for kind in KINDS:
            kinds[save_variant(original, kind, root / "val" / name / kind)] = (kind, original)
    splits, features, _ = plain_features(root, **options)
    result = {"photos": len(PHOTOS)}
    for centre in (True, False):
        pairs = closest_pairs(splits, features, centre=centre)
        similarity = {kind: [] for kind, _ in kinds.values()}
        for pair in pairs:
            kind, original = kinds[pair.path_b]
            similarity[kind].append(pair.similarity if pair.path_a == original else 0.0)
        name = "centred" if centre else "raw"
        result[name] = {kind: _quantiles(values) | {"min": min(values)} for kind, values in similarity.items()}
        result[f"found_{name}"] = {t: {kind: sum(v >= t for v in values) for kind, values in similarity.items()}
                                   for t in SIMILARITIES}
    for centre in (True, False):  # the most similar pair of different photos
        train = np.array(features["train"].features, dtype=np.float32)
        train -= train.mean(axis=0) if centre else 0.0
        train /= np.linalg.norm(train, axis=1, keepdims=True)
        cosine = train @ train.T
        result[f"distinct_photos_max_{'centred' if centre else 'raw'}"] = round(
            float(cosine[~np.eye(len(cosine), dtype=bool)].max()), 4)
    return result


def thumbnail_correlation(a: Path, b: Path, size: int = 16) -> float:
    """Pearson correlation of two grey size x size thumbnails (the better of b and b mirrored)."""
    def thumb(path, mirror=False):
        image = load_image(path).convert("L").resize((size, size), Image.BILINEAR)
        pixels = np.asarray(ImageOps.mirror(image) if mirror else image, dtype=np.float64).ravel()
        pixels -= pixels.mean()
        return pixels / max(np.linalg.norm(pixels), 1e-9)

    first = thumb(a)
    return round(float(max(first @ thumb(b), first @ thumb(b, mirror=True))), 4)


def _label_quality(oof, classes) -> dict:
    """Accuracy and log loss of the out-of-fold probabilities, and what each confidence flags."""
    probabilities, labels, _ = oof
    return {"accuracy": round(float((probabilities.argmax(axis=1) == labels).mean()), 4),
            "log_loss": round(float(log_loss(labels, probabilities, labels=range(len(classes)))), 4),
            "flagged": {t: len(confident_disagreements(*oof, classes, confidence=t)) for t in CONFIDENCES}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", help="a folder with train/ and test/ class folders, e.g. cifar10-dev")
    parser.add_argument("--per-class", type=int, default=200, help="train images per class (20%% become val)")
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--per-kind", type=int, default=20, help="planted copies of each kind")
    parser.add_argument("--flips", type=int, default=40, help="train images moved to a wrong class folder")
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="also write the measurements as JSON")
    args = parser.parse_args(argv)
    report = measure(args)
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if args.output:
        Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
