"""Finding the user's images and classes, and saying clearly what is wrong when they can't be used.

Three layouts are accepted:
- a folder with train/ and val/ (or valid/, validation/) and optional test/, each of class folders;
- one folder of class folders, split into train/val stratified by class and seeded;
- a CSV with columns path,label (and optionally split), paths relative to the CSV's folder.
Hidden and junk entries (.git, .ipynb_checkpoints, __MACOSX, .DS_Store, Thumbs.db) are ignored;
non-image and unreadable files are skipped and reported, never fatal, and never modified.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadImageError, DataError
from .images import IMAGE_EXTENSIONS, load_image

VAL_NAMES = ("val", "valid", "validation")
JUNK_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str


@dataclass
class DataSplits:
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    source: str = ""

    def counts(self, split: str) -> dict[str, int]:
        counter = Counter(s.label for s in getattr(self, split))
        return {name: counter.get(i, 0) for i, name in enumerate(self.classes)}

    def describe(self) -> str:
        parts = [f"{len(getattr(self, s))} {s}" for s in ("train", "val", "test") if getattr(self, s)]
        per_class = self.counts("train")
        low, high = min(per_class.values()), max(per_class.values())
        text = f"Data {self.source}: {len(self.classes)} classes, {', '.join(parts)} images ({low}-{high} train images per class)"
        if self.skipped:
            text += f"; {len(self.skipped)} files skipped"
        return text


def _is_hidden(path: Path) -> bool:
    return path.name.startswith((".", "_")) or path.name.lower() in JUNK_FILES


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _is_hidden(p))


def _files_of(folder: Path, skipped: list[SkippedFile]) -> list[Path]:
    """Image files under a class folder (recursively); other files are reported as skipped."""
    images = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(Path(d)))
        for name in sorted(names):
            path = Path(root) / name
            if _is_hidden(path):
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(path)
            else:
                skipped.append(SkippedFile(path, f"not an image (extension {path.suffix or 'none'})"))
    return images


def _scan_split(folder: Path, skipped: list[SkippedFile]) -> dict[str, list[Path]]:
    classes = _class_folders(folder)
    if not classes:
        raise DataError(
            f"{folder}: no class folders found. Put each class's images in its own subfolder, e.g. "
            f"{folder}/cats/1.jpg and {folder}/dogs/2.jpg."
        )
    return {c.name: _files_of(c, skipped) for c in classes}


def _check_images(samples: list[Sample], skipped: list[SkippedFile], workers: int | None) -> list[Sample]:
    """Decode every image once (in threads: Pillow releases the GIL); drop and report unreadable ones."""

    def readable(sample: Sample) -> str | None:
        try:
            load_image(sample.path, draft_size=(256, 256))
        except BadImageError as error:
            return error.reason
        return None

    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        reasons = list(pool.map(readable, samples))
    skipped.extend(SkippedFile(s.path, r) for s, r in zip(samples, reasons) if r is not None)
    return [s for s, r in zip(samples, reasons) if r is None]


def _require_classes(classes: list[str], where: str) -> None:
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise DataError(f"{where}: need at least two classes to train a classifier, found {found}. Add a folder per class.")


def _require_every_class(samples: list[Sample], classes: list[str], where: str) -> None:
    present = Counter(s.label for s in samples)
    for label, name in enumerate(classes):
        if not present.get(label):
            raise DataError(f"{where}/{name}: class {name!r} has no readable images. Add images or remove the folder.")


def _stratified_split(samples: list[Sample], classes: list[str], val_split: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    from sklearn.model_selection import train_test_split

    if not 0.0 < val_split < 1.0:
        raise DataError(f"--val-split {val_split}: use a fraction between 0 and 1, e.g. 0.2.")
    for label, count in sorted(Counter(s.label for s in samples).items()):
        if count < 2:
            raise DataError(
                f"class {classes[label]!r} has {count} image; at least 2 are needed to put one in "
                "train and one in val. Add images or give a val/ folder."
            )
    labels = [s.label for s in samples]
    n_val = max(len(classes), round(len(samples) * val_split))
    if len(samples) - n_val < len(classes):
        raise DataError(f"{len(samples)} images are too few to split with --val-split {val_split}; add images or give a val/ folder.")
    train, val = train_test_split(samples, test_size=n_val, stratify=labels, random_state=seed)
    return sorted(train, key=lambda s: str(s.path)), sorted(val, key=lambda s: str(s.path))


def _to_samples(by_class: dict[str, list[Path]], classes: list[str]) -> list[Sample]:
    index = {name: i for i, name in enumerate(classes)}
    return sorted((Sample(p, index[name]) for name, paths in by_class.items() for p in paths), key=lambda s: str(s.path))


def find_data(
    source: str | Path,
    *,
    val_split: float = 0.2,
    seed: int = 0,
    check_images: bool = True,
    workers: int | None = None,
) -> DataSplits:
    """Discover the classes and train/val/test samples in `source` (see the module docstring)."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder. Give a folder of class folders, a folder with train/ and val/, or a CSV.")
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise DataError(f"{source}: is a file but not a .csv. Give a folder of class folders, or a CSV with columns path,label.")
        return _from_csv(source, val_split=val_split, seed=seed, check_images=check_images, workers=workers)

    skipped: list[SkippedFile] = []
    children = {p.name.lower(): p for p in source.iterdir() if p.is_dir() and not _is_hidden(p)}
    val_dir = next((children[n] for n in VAL_NAMES if n in children), None)
    # train/ (+ val/ or a split of train/) (+ test/), or else the folder itself holds the classes.
    folders = {"train": children.get("train", source)}
    if val_dir is not None and "train" in children:
        folders["val"] = val_dir
    if "test" in children and "train" in children:
        folders["test"] = children["test"]
    scanned = {split: _scan_split(folder, skipped) for split, folder in folders.items()}
    classes = sorted(scanned["train"])
    _require_classes(classes, str(folders["train"]))
    for split, by_class in scanned.items():
        if split != "train" and sorted(by_class) != classes:
            missing, extra = sorted(set(classes) - set(by_class)), sorted(set(by_class) - set(classes))
            detail = "; ".join(filter(None, [
                f"missing in {folders[split].name}/: {', '.join(missing)}" if missing else "",
                f"only in {folders[split].name}/: {', '.join(extra)}" if extra else "",
            ]))
            raise DataError(f"{source}: train/ and {folders[split].name}/ have different classes ({detail}). Use the same class folders in each.")
    splits = {split: _to_samples(by_class, classes) for split, by_class in scanned.items()}
    if check_images:
        splits = {split: _check_images(samples, skipped, workers) for split, samples in splits.items()}
    for split, samples in splits.items():
        _require_every_class(samples, classes, str(folders[split]))
    if "val" not in splits:
        splits["train"], splits["val"] = _stratified_split(splits["train"], classes, val_split, seed)
    return DataSplits(classes, splits["train"], splits["val"], splits.get("test", []), skipped, str(source))


def _read_csv(path: Path, skipped: list[SkippedFile]) -> list[tuple[Path, str, str | None]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip().lower() for c in (reader.fieldnames or [])]
            if "path" not in columns or "label" not in columns:
                raise DataError(f"{path}: needs a header with columns path,label (and optionally split); found {', '.join(columns) or 'no header'}.")
            rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text CSV ({exc}).") from None
    entries, missing = [], []
    for line, row in enumerate(rows, start=2):
        if not row.get("path") or not row.get("label"):
            raise DataError(f"{path}, line {line}: empty path or label. Every row needs both.")
        file = Path(row["path"]) if Path(row["path"]).is_absolute() else path.parent / row["path"]
        if not file.exists():
            missing.append(f"line {line}: {row['path']}")
            continue
        if file.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append(SkippedFile(file, f"not an image (extension {file.suffix or 'none'})"))
            continue
        split = row.get("split") or None
        if split is not None and split.lower() not in ("train", *VAL_NAMES, "test"):
            raise DataError(f"{path}, line {line}: split {split!r} must be train, val or test.")
        entries.append((file, row["label"], None if split is None else ("val" if split.lower() in VAL_NAMES else split.lower())))
    if missing:
        raise DataError(f"{path}: {len(missing)} listed files do not exist ({'; '.join(missing[:3])}). Paths are relative to the CSV's folder.")
    if not entries:
        raise DataError(f"{path}: lists no images.")
    return entries


def _from_csv(path: Path, *, val_split: float, seed: int, check_images: bool, workers: int | None) -> DataSplits:
    skipped: list[SkippedFile] = []
    entries = _read_csv(path, skipped)
    classes = sorted({label for _, label, _ in entries})
    _require_classes(classes, str(path))
    index = {name: i for i, name in enumerate(classes)}
    samples = [Sample(file, index[label]) for file, label, _ in entries]
    split_of = {file: split for file, _, split in entries}
    if check_images:
        samples = _check_images(samples, skipped, workers)
    _require_every_class(samples, classes, str(path))
    if any(split is not None for split in split_of.values()):
        by_split = {s: [x for x in samples if split_of[x.path] == s] for s in ("train", "val", "test")}
        if not by_split["train"] or not by_split["val"]:
            raise DataError(f"{path}: the split column needs rows for both train and val.")
        return DataSplits(classes, by_split["train"], by_split["val"], by_split["test"], skipped, str(path))
    train, val = _stratified_split(samples, classes, val_split, seed)
    return DataSplits(classes, train, val, [], skipped, str(path))


def find_eval_data(source: str | Path, classes: list[str], *, check_images: bool = True) -> tuple[list[Sample], list[SkippedFile]]:
    """Labelled images for evaluating a model with `classes`: class folders, a split folder, or a CSV."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder to evaluate on.")
    skipped: list[SkippedFile] = []
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise DataError(f"{source}: is a file but not a .csv; give a folder of class folders or a CSV.")
        entries = [(f, label) for f, label, _ in _read_csv(source, skipped)]
    else:
        children = {p.name.lower(): p for p in source.iterdir() if p.is_dir() and not _is_hidden(p)}
        folder = children.get("test") or next((children[n] for n in VAL_NAMES if n in children), source)
        entries = [(p, name) for name, paths in _scan_split(folder, skipped).items() for p in paths]
    unknown = sorted({label for _, label in entries} - set(classes))
    if unknown:
        raise DataError(f"{source}: classes {', '.join(unknown)} are not among the model's classes ({', '.join(classes)}).")
    index = {name: i for i, name in enumerate(classes)}
    samples = sorted((Sample(p, index[label]) for p, label in entries), key=lambda s: str(s.path))
    if check_images:
        samples = _check_images(samples, skipped, None)
    if not samples:
        raise DataError(f"{source}: no readable images to evaluate on.")
    return samples, skipped


def write_skipped_report(skipped: list[SkippedFile], path: str | Path) -> None:
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps([{"path": str(s.path), "reason": s.reason} for s in skipped], indent=1))
    os.replace(temporary, path)
