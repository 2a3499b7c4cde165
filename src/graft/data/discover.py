"""Finding the user's labelled images, and saying exactly what is wrong when they cannot be used.

Accepted layouts (see `find_data`):

- a folder with `train/` and `val/` (or `valid/`, `validation/`) and optional `test/`, each
  holding one folder per class; with `train/` but no `val/`, `train/` is split like a flat folder;
- one folder of class folders, split into train/val per class (stratified) with a seed;
- a label file (graft.data.labels): a CSV or TSV with a path column, a label column and optionally
  `split` (train/val/test), or JSONL; or Hugging Face's imagefolder layout, a `metadata.csv` or
  `metadata.jsonl` in the folder or in each of its train/, val/ and test/ folders; or a folder with a
  label file per split (train.csv, test.csv: paths from the file). Folders named
  like splits are never classes. Such a label file beside class folders gives the labels where the
  folders agree with it, and is refused, naming both, where they do not (`_beside_class_folders`).

A label file may give an image several labels, or none (`[]`): multi-label data. `find_data`'s
`task` says which data its caller takes: "single" (one class per image: `Sample.label`; multi-label
data is refused), "multilabel" (a set of classes per image: `Sample.labels`) or "auto" (multi-label
when any image has several labels or none). Multi-label data without a val split is split by
iterative stratification (graft.data.stratify), so that each label keeps its share in train and val.

Hidden and junk entries (`.git`, `.ipynb_checkpoints`, `__MACOSX`, `.DS_Store`, `Thumbs.db`) are
ignored. Non-image and unreadable files are skipped and reported, never fatal and never modified:
a stray `notes.txt` or one broken download should not stop a run, but the user should hear of it.
Everything else that makes the data unusable raises a `DataError` naming the path and the fix.

graft's own output is never data: run `graft train .` twice inside the data folder and the first
run's `runs/` (report PNGs) would otherwise become a class. A folder holding `RUN_MARKER` or
`OUTPUT_MARKER`, or made by an older graft (graft.json next to model.safetensors, compare.json next
to compare.md), is left out at any depth, and so is a folder holding nothing but such folders.
Folder links are followed, except those leading back to the data folder, above it, or to a folder
already read; the same image file reached twice (through links) is refused, as in a CSV.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadImageError, DataError
from ..fingerprint import files_fingerprint
from ..io import OUTPUT_MARKER, RUN_MARKER, write_bytes_atomic, write_json_atomic
from .images import IMAGE_EXTENSIONS, load_image
from .labels import (
    SPLIT_NAMES,
    LabelRow,
    LabelRows,
    is_label_file,
    metadata_file,
    read_imagefolder,
    read_label_file,
    read_split_files,
    resolve_task,
    split_label_files,
)
from .labels import counted as _count
from .labels import first_few as _first

# RUN_MARKER (in every run and compare folder graft writes) and OUTPUT_MARKER (in the output root
# graft creates, runs/) are defined where graft writes them, graft.io, and exported here too.
# Folders written by graft versions older than the markers: these files side by side.
_OLD_OUTPUT_FILES = (("graft.json", "model.safetensors"), ("compare.json", "compare.md"))

SPLITS = ("train", "val", "test")
SPLIT_FOLDER_NAMES = SPLIT_NAMES
JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
CHECK_DRAFT_SIZE = (256, 256)  # checking only needs a decode, not full resolution

_LAYOUTS = ("give a folder of class folders (data/cats/1.jpg, data/dogs/2.jpg), a folder with "
            "train/ and val/ folders of class folders, a CSV file with columns path,label (or path,labels "
            "for several labels per image), a JSONL file, or a Hugging Face imagefolder (metadata.jsonl)")

# A folder of class folders, or of split folders, or a CSV: the nested mapping every layout becomes.
ImagesByClass = dict[str, list[Path]]
ImagesBySplit = dict[str, ImagesByClass]
# Multi-label data: each split's images, each with its class names (any number).
LabelledBySplit = dict[str, list[tuple[Path, tuple[str, ...]]]]


@dataclass(frozen=True)
class Sample:
    """One labelled image. `labels` holds the indexes of its classes in the class list, sorted.

    Single-label data: `label` is the image's one class and `labels` is `(label,)`, filled in.
    Multi-label data: `labels` holds any number of classes (none for an image that has none of
    them) and `label` is -1, as for an image whose class is unknown (prediction).
    """

    path: Path
    label: int
    labels: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.label >= 0:
            if self.labels not in ((), (self.label,)):
                raise ValueError(f"a sample of class {self.label} cannot have the labels {self.labels}")
            object.__setattr__(self, "labels", (self.label,))


def sample_targets(samples: list[Sample], classes: int, task: str = "single"):
    """What a classifier learns from `samples`: for single-label data their classes (int64, N); for
    multi-label data an N x `classes` multi-hot float32 array (1 where the image has the class)."""
    import numpy as np

    if task == "single":
        return np.array([sample.label for sample in samples], dtype=np.int64)
    multi_hot = np.zeros((len(samples), classes), dtype=np.float32)
    for row, sample in enumerate(samples):
        multi_hot[row, list(sample.labels)] = 1
    return multi_hot


@dataclass(frozen=True)
class SkippedFile:
    """A file graft did not use, and why, so the user can fix or delete it."""

    path: Path
    reason: str


@dataclass
class DataSplits:
    """The classes and the labelled samples of each split, plus what was skipped.

    `layout` says in words how the data was read and split, for summaries and run metadata.
    `ignored` lists folders left out on purpose, not for the user to fix: graft's own output, and
    folder links that lead back into data already read (the reason says which). `task` is "single"
    (each sample's class is its `label`) or "multilabel" (each sample's classes are its `labels`).
    """

    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    source: str = ""
    layout: str = ""
    ignored: list[SkippedFile] = field(default_factory=list)
    task: str = "single"

    def counts(self, split: str) -> dict[str, int]:
        """Images per class (every class, zeros included, in class order) in `split`; in multi-label
        data an image counts once for each of its classes."""
        per_label = Counter(label for sample in self._split(split) for label in sample.labels)
        return {name: per_label[label] for label, name in enumerate(self.classes)}

    def cardinality(self, split: str) -> float:
        """Mean labels per image in `split` (1 for single-label data; 0 for a split with no image)."""
        samples = self._split(split)
        return sum(len(sample.labels) for sample in samples) / len(samples) if samples else 0.0

    def targets(self, samples: list[Sample]):
        """`sample_targets` of `samples` for this data's classes and task."""
        return sample_targets(samples, len(self.classes), self.task)

    def describe(self, max_classes: int = 20) -> str:
        """A few lines for the terminal: source, task, images per split and per class (in multi-label
        data: labels per image, images with none, images per label), skipped files."""
        splits = [split for split in SPLITS if getattr(self, split)]
        totals = ", ".join(f"{len(getattr(self, split))} {split}" for split in splits)
        skipped = f"; {_count(len(self.skipped), 'file')} skipped" if self.skipped else ""
        task = "multi-label" if self.task == "multilabel" else "single-label"
        lines = [f"Data: {self.source}" + (f" ({self.layout})" if self.layout else ""),
                 f"{len(self.classes)} classes, {task}; images: {totals}{skipped}"]
        if self.task == "multilabel":
            unlabelled = sum(not sample.labels for split in splits for sample in getattr(self, split))
            none = f"; {_count(unlabelled, 'image')} with no label" if unlabelled else ""
            lines += [f"labels per image: {', '.join(f'{self.cardinality(s):.2f} {s}' for s in splits)}{none}",
                      "images per label:"]
        counts = {split: self.counts(split) for split in splits}
        shown = self.classes[:max_classes]
        width = max(map(len, shown), default=0)
        for name in shown:
            lines.append(f"  {name:<{width}}  " + "  ".join(f"{counts[s][name]:>5} {s}" for s in splits))
        if len(self.classes) > len(shown):
            lines.append(f"  ... and {len(self.classes) - len(shown)} more classes")
        lines.extend(f"  ignored {what}" for what in _ignored_phrases(self.ignored, Path(self.source)))
        return "\n".join(lines)

    def _split(self, split: str) -> list[Sample]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        return getattr(self, split)


def _ignored_phrases(ignored: list[SkippedFile], root: Path) -> list[str]:
    """One phrase for graft's output folders, one for folder links, each folder named once."""
    def shown(path: Path) -> str:
        return (str(path.relative_to(root)) if path.is_relative_to(root) else str(path)) + "/"

    output = [shown(item.path) for item in ignored if item.reason == _OUTPUT_REASON]
    links = [f"{shown(item.path)} ({item.reason})" for item in ignored if item.reason != _OUTPUT_REASON]
    return ([f"graft's own output: {', '.join(output)}"] if output else []) + (
        [f"folder links: {'; '.join(links)}"] if links else [])


def _ignored_note(data: _Source) -> str:
    """For errors about missing classes or images: what graft left out on purpose, if anything."""
    phrases = _ignored_phrases(data.ignored, data.path)
    return f" (graft ignored {'; and '.join(phrases)})" if phrases else ""


@dataclass
class _Source:
    """Where the data is and which splits it holds, before any class folder is read.

    `splits` maps each split to its folder (for a label file: to the file that lists it). `presplit`
    is true when the user chose the splits (split folders or a split column), false when graft has
    to split. `rows` holds a label file's rows (graft.data.labels), None for class folders.
    """

    path: Path
    splits: dict[str, Path]
    presplit: bool
    rows: LabelRows | None = None
    skipped: list[SkippedFile] = field(default_factory=list)
    ignored: list[SkippedFile] = field(default_factory=list)

    @property
    def is_label_file(self) -> bool:
        return self.rows is not None

    @property
    def layout(self) -> str:
        if self.rows is not None:
            return self.rows.layout
        if self.presplit:
            return ", ".join(f"{folder.name}/" for folder in self.splits.values()) + " folders"
        return "class folders"

    def where(self, split: str, name: str | None = None) -> str:
        """Where a split (or one class of it) lives, in words for error messages."""
        if not self.is_label_file:
            folder = self.splits[split]
            return str(folder / name if name else folder)
        file = self.splits.get(split, self.path)
        rows = f"the {split} rows of {file}" if self.presplit else f"the rows of {file}"
        return f"{rows} labelled {name!r}" if name else rows

    def collect(self, splits: Iterable[str]) -> ImagesBySplit:
        """Image files by split and class name (single-label data); other files are added to `skipped`."""
        if self.is_label_file:
            return {split: self._rows_by_label(split) for split in splits}
        scan = _Scan(self.path, self.splits.values())
        found = {split: scan.class_folders(self.splits[split]) for split in splits}
        scan.follow_links()
        images = {split: scan.images(by_class) for split, by_class in found.items()}
        self.skipped.extend(scan.skipped)
        self.ignored.extend(scan.ignored)
        scan.check_duplicates(self.path)
        return images

    def labelled(self, splits: Iterable[str]) -> LabelledBySplit:
        """Each split's image files and their class names, sorted by path (multi-label data, where an
        image may have several classes or none); other files are added to `skipped`."""
        if self.rows is None:
            return {split: sorted((path, (name,)) for name, paths in by_class.items() for path in paths)
                    for split, by_class in self.collect(splits).items()}
        return {split: sorted((row.file, row.labels) for row in self.rows.rows
                              if row.split == split and _is_image(row.file, self.skipped)) for split in splits}

    def _rows_by_label(self, split: str) -> ImagesByClass:
        by_label: ImagesByClass = {}
        for row in self.rows.rows if self.rows else []:
            if row.split == split and _is_image(row.file, self.skipped):
                by_label.setdefault(row.labels[0], []).append(row.file)
        return by_label


# -- Public API --------------------------------------------------------------------------------


def find_data(
    source: str | Path,
    *,
    val_split: float = 0.2,
    seed: int = 0,
    check_images: bool = True,
    workers: int | None = None,
    task: str = "single",
) -> DataSplits:
    """Find the classes and the train/val(/test) samples in `source` (a folder or a label file).

    Classes are the sorted class-folder names (or labels); a sample's label indexes them.
    Without a val split, each class is split on its own (stratified) with `val_split` and `seed`,
    so every class lands in both splits. With `check_images`, every image is decoded once, in
    `workers` threads, and unreadable ones are skipped: better now than an hour into training.

    `task` is the data the caller takes: "single" refuses images with several labels or none,
    "multilabel" reads every image's set of classes (`Sample.labels`), "auto" is "multilabel" where
    any image has several labels or none. Multi-label data is split by `_split_labelled`.
    """
    _check_split_options(val_split, seed)
    data = _open_source(source)
    if "train" not in data.splits:
        raise DataError(f"{data.path} has {_listing(data)} but no training data; add a train/ folder "
                        "(or train rows) with the same classes.")
    if resolve_task(data.rows, task) == "multilabel":
        return _find_labelled(data, val_split, seed, check_images, workers)
    images = data.collect(data.splits)
    classes = _check_classes(data, images)
    if check_images:
        dropped = _drop_unreadable(images, data.skipped, workers)
        _check_no_empty_class(data, images, dropped)
    layout = data.layout
    if "val" not in images:
        images["train"], images["val"] = _split_train(data, images["train"], val_split, seed)
        layout += f"; val is {val_split:.0%} of each class, seed {seed}"
    samples = {split: _samples(by_class, classes) for split, by_class in images.items()}
    return DataSplits(classes, samples["train"], samples["val"], samples.get("test", []),
                      data.skipped, str(data.path), layout, data.ignored)


def find_eval_data(
    source: str | Path, classes: list[str], *, check_images: bool = True, task: str = "single"
) -> tuple[list[Sample], list[SkippedFile]]:
    """Labelled images to evaluate a model trained on `classes`, and the files skipped.

    `source` is a folder of class folders, a label file, or a split folder (its test/ if present,
    else its val/: never train/, which the model has seen). Its classes must be among `classes`, but
    need not be all of them; labels index `classes`, the model's order. `task` as for `find_data`.
    """
    data = _open_source(source)
    split = _evaluation_split(data)
    if resolve_task(data.rows, task) == "multilabel":
        labelled = data.labelled([split])
        _refuse_unknown_classes(data, split, {name for _, names in labelled[split] for name in names}, classes)
        if check_images:
            _drop_unreadable_labelled(labelled, data.skipped, None)
        samples = _labelled_samples(labelled[split], classes)
    else:
        images = data.collect([split])
        _refuse_unknown_classes(data, split, set(images[split]), classes)
        if check_images:
            _drop_unreadable(images, data.skipped, None)
        samples = _samples(images[split], classes)
    if not samples:
        raise DataError(f"No readable images to evaluate in {data.where(split)}; "
                        f"graft reads {_extensions()}.")
    return samples, data.skipped


def _refuse_unknown_classes(data: _Source, split: str, found: set[str], classes: list[str]) -> None:
    unknown = sorted(found - set(classes))
    if unknown:
        kind = "labels" if data.is_label_file else "class folders"
        raise DataError(f"{data.where(split)} has {kind} the model does not know: {', '.join(unknown)}. "
                        f"The model's classes are: {', '.join(classes)}. Remove or rename them, "
                        "or evaluate a model trained on these classes.")


def write_skipped_report(skipped: Iterable[SkippedFile], path: str | Path) -> Path:
    """Write `[{"path": ..., "reason": ...}, ...]` as JSON, atomically: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(path, [{"path": str(item.path), "reason": item.reason} for item in skipped])


# -- Finding the source and its splits ---------------------------------------------------------


def _check_split_options(val_split: float, seed: int) -> None:
    """Reject values that would only fail later, deep inside scikit-learn."""
    if isinstance(val_split, bool) or not isinstance(val_split, numbers.Real) or not 0 < val_split < 1:
        raise DataError(f"val_split {val_split!r} (--val-split) must be a fraction between 0 and 1, "
                        "e.g. 0.2 to keep 20% of each class for validation.")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise DataError(f"seed {seed!r} (--seed) must be a whole number from 0 to {2**32 - 1}.")


def _open_source(source: str | Path) -> _Source:
    path = Path(source).expanduser().absolute()
    if not path.exists():
        raise DataError(f"{path} does not exist. Check the path: {_LAYOUTS}.")
    if path.is_dir():
        if _is_graft_output(path):
            raise DataError(f"{path} is graft's own output (a run or output folder), not data: {_LAYOUTS}. "
                            "Give the folder that holds your class folders.")
        found = _imagefolder_source(path) or _split_files_source(path)
        return _beside_class_folders(found) if found is not None else _folder_source(path)
    if is_label_file(path):
        return _label_source(path, read_label_file(path))
    hint = (" To classify one image, use graft predict; to train, give the folder that holds the class "
            "folders." if path.suffix.lower() in IMAGE_EXTENSIONS else "")
    raise DataError(f"{path} is a file but not a .csv, .tsv or .jsonl label file: {_LAYOUTS}.{hint}")


def _label_source(path: Path, found: LabelRows) -> _Source:
    """Each split the rows name, with the file that lists it (one file, or one per split folder)."""
    files = {row.split: row.source for row in reversed(found.rows)}  # the first file to list each split
    splits = {split: files[split] for split in SPLITS if split in files}
    return _Source(path, splits or {"train": path}, found.presplit, found)


def _imagefolder_source(root: Path) -> _Source | None:
    """Hugging Face's imagefolder layout: a metadata file in `root`, or one in each split folder."""
    top = metadata_file(root)
    by_split: dict[str, Path] = {}
    folders = [(folder, SPLIT_FOLDER_NAMES.get(folder.name.lower())) for folder in _visible_folders(root)]
    for folder, split in folders:
        file = metadata_file(folder) if split else None
        if file is not None and split in by_split:
            raise DataError(f"{root} has both {by_split[split].parent.name}/ and {folder.name}/ with metadata: keep "
                            "one validation folder (val/, valid/ or validation/).")
        if file is not None and split is not None:
            by_split[split] = file
    if top is None and not by_split:
        return None
    if top is not None and by_split:
        raise DataError(f"{root} has a metadata file ({top.name}) and so do its split folders "
                        f"({', '.join(f'{file.parent.name}/{file.name}' for file in by_split.values())}); keep "
                        f"either the one in {root} or one in each split folder.")
    bare = [folder for folder, split in folders if split and split not in by_split] if top is None else []
    if bare:
        raise DataError(f"{bare[0]} has no metadata file, but {next(iter(by_split.values())).parent.name}/ has one: "
                        "give each split folder its metadata.csv or metadata.jsonl (file_name and label or labels).")
    files = {"": top} if top is not None else by_split
    with _folders_hint(root, list(files.values())):
        return _label_source(root, read_imagefolder(root, files))


def _split_files_source(root: Path) -> _Source | None:
    """A folder with a label file per split beside the images (train.csv and test.csv, as tags-dev).
    Split folders that hold class folders are class folders, whatever CSV lies beside them."""
    if any(_visible_folders(folder) for folder in _visible_folders(root) if folder.name.lower() in SPLIT_FOLDER_NAMES):
        return None
    files = split_label_files(root)
    if not files:
        return None
    with _folders_hint(root, list(files.values())):
        return _label_source(root, read_split_files(root, files))


# -- A label file beside class folders -------------------------------------------------------------
#
# DATA/train.csv (or metadata.jsonl) beside DATA/cat/ and DATA/dog/: two sources of labels. graft
# reads the file (Hugging Face's imagefolder does too, and it may give several labels) and says so,
# where the folders agree with it: every image in a folder named like one of the file's labels is
# listed, with that label among its own. Where they disagree, which is right cannot be known: graft
# refuses, names both and the images, and says how to pick one (the file given itself as DATA is the
# user's choice, and is never compared). Folders that no label names (images/, train/) only hold images.


def _beside_class_folders(data: _Source) -> _Source:
    """`data` (a label file found in a folder), checked against the class folders beside it."""
    assert data.rows is not None
    labels = {label for row in data.rows.rows for label in row.labels}
    folders = [sub for file in dict.fromkeys(file.parent for file in data.rows.files)
               for sub in _class_like_folders(file)]
    if not any(folder.name in labels for folder in folders):
        return data
    shown = ", ".join(f"{_relative(folder, data.path)}/" for folder in folders)
    wrong = [(row, folder) for row in data.rows.rows
             if (folder := _folder_of(row.file, folders)) is not None and folder.name not in row.labels]
    listed = {os.path.normpath(row.file) for row in data.rows.rows}
    unlisted = [image for folder in folders for image in _images_below(folder) if os.path.normpath(image) not in listed]
    if wrong or unlisted:
        raise DataError(_disagreement(data, shown, wrong, unlisted))
    names = _names(_in_split_order(data), data.path)
    data.rows.layout += f": labels from {names}, and the class folders {shown} beside {_it(data.rows.files)} agree"
    return data


def _class_like_folders(folder: Path) -> list[Path]:
    """The visible subfolders of `folder` that could be class folders: not split folders, not graft's output."""
    return [sub for sub in _visible_folders(folder) if sub.name.lower() not in SPLIT_FOLDER_NAMES and not _is_graft_output(sub)]


def _folder_of(file: Path, folders: list[Path]) -> Path | None:
    """The one of `folders` that `file` lies in (at any depth), if any."""
    return next((folder for folder in folders if file.is_relative_to(folder)), None)


def _images_below(folder: Path) -> list[Path]:
    """The image files in `folder` at any depth, as a class folder is read (hidden and junk names left out)."""
    found = []
    for top, subfolders, files in os.walk(folder):
        subfolders[:] = sorted(name for name in subfolders if not _is_ignored(name) and not _is_graft_output(Path(top) / name))
        found += [Path(top) / name for name in sorted(files)
                  if not _is_ignored(name) and Path(name).suffix.lower() in IMAGE_EXTENSIONS]
    return found


def _disagreement(data: _Source, shown: str, wrong: list[tuple[LabelRow, Path]], unlisted: list[Path]) -> str:
    files, root = _in_split_order(data), data.path
    said = [f"{row.source.name} line {row.line} labels {_relative(row.file, root)} "
            f"{', '.join(row.labels).join(chr(39) * 2) if row.labels else 'with no label'}, but it lies in "
            f"{_relative(folder, root)}/" for row, folder in wrong]
    if unlisted:
        more = f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else ""
        said.append(f"{_count(len(unlisted), 'image')} in the class folders {'is' if len(unlisted) == 1 else 'are'} in "
                    f"no label file ({', '.join(_relative(image, root) for image in unlisted[:5])}{more})")
    train = data.splits.get("train", files[0])
    evaluate = "".join(f"; graft evaluate RUN {file} for its {split} images" for split, file in data.splits.items()
                       if file != train and file in files)
    kind = "a label file" if len(files) == 1 else "label files"
    return (f"{root} holds class folders ({shown}) and {kind} ({_names(files, root, ', ')}), and they disagree: "
            f"{_first(said)}. graft cannot tell which gives the labels. To train on the labels of "
            f"{_relative(train, root)}, give the file itself: graft train {train}{evaluate}. To train on the class "
            f"folders, move {_names(files, root)} out of {root}. Or make the two agree (correct the labels, or move "
            "the images into the folders of their labels).")


@contextlib.contextmanager
def _folders_hint(root: Path, files: list[Path]):
    """A label file graft cannot read, in a folder of class folders: the error also says how to train on the
    folders (a Kaggle download's train.csv of ids beside cat/ and dog/)."""
    try:
        yield
    except DataError as error:
        folders = _class_like_folders(root)
        if len(folders) < 2:
            raise
        shown = ", ".join(f"{folder.name}/" for folder in folders)
        raise DataError(f"{error} Or, to train on the class folders {shown} beside {_it(files)}, move "
                        f"{_names(files, root)} out of {root}.") from None


def _in_split_order(data: _Source) -> list[Path]:
    """The label files of `data`, train's first."""
    files = data.rows.files if data.rows else []
    return list(dict.fromkeys([*(file for file in data.splits.values() if file in files), *files]))


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _names(files: list[Path], root: Path, joined: str = " and ") -> str:
    return joined.join(_relative(file, root) for file in files)


def _it(files: list[Path]) -> str:
    return "it" if len(files) == 1 else "them"


def _folder_source(root: Path) -> _Source:
    """Split folders (train/, val/, test/) when any of them holds folders, or when there are only
    split folders (never two classes called train and val), else class folders.

    Requiring one of these keeps a flat dataset with a class called "train" (the vehicle) working.
    """
    folders = _visible_folders(root)
    output = {folder for folder in folders if _is_graft_output(folder)}
    named = {folder: SPLIT_FOLDER_NAMES.get(folder.name.lower()) for folder in folders if folder not in output}
    only_splits = len(named) > 1 and all(named.values())
    if not only_splits and not any(split and _visible_folders(folder) for folder, split in named.items()):
        return _Source(root, {"train": root}, presplit=False)  # the scan leaves the output out
    splits: dict[str, Path] = {}
    skipped: list[SkippedFile] = []
    ignored = [SkippedFile(folder, _OUTPUT_REASON) for folder in sorted(output)]
    for folder, split in named.items():
        if split is None:
            skipped.append(SkippedFile(folder, "folder ignored: not a train/, val/ or test/ folder"))
        elif split in splits:
            raise DataError(f"{root} has both {splits[split].name}/ and {folder.name}/: keep one "
                            "validation folder (val/, valid/ or validation/).")
        else:
            splits[split] = folder
    return _Source(root, dict(sorted(splits.items(), key=lambda item: SPLITS.index(item[0]))),
                   presplit=True, skipped=skipped, ignored=ignored)


def _evaluation_split(data: _Source) -> str:
    for split in ("test", "val"):
        if split in data.splits:
            return split
    if data.presplit:
        raise DataError(f"{data.path} has {_listing(data)} but no val or test split to evaluate on; "
                        "a model is not measured on its training images. Add a test/ or val/ folder "
                        "(or test rows), or give a folder of class folders.")
    return "train"


def _listing(data: _Source) -> str:
    if data.is_label_file:
        return "only " + ", ".join(data.splits) + " rows"
    return "only " + ", ".join(f"{folder.name}/" for folder in data.splits.values())


# -- Folders -----------------------------------------------------------------------------------


def _is_ignored(name: str) -> bool:
    """Hidden, private and OS junk entries: .git, .ipynb_checkpoints, __MACOSX, Thumbs.db, ..."""
    return name.startswith((".", "_")) or name.lower() in JUNK_NAMES


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(entry for entry in folder.iterdir() if not _is_ignored(entry.name))
    except OSError as error:
        raise DataError(f"Cannot read the folder {folder} ({error.strerror}); check that it exists "
                        "and that you may read it.") from None


def _visible_folders(folder: Path) -> list[Path]:
    return [entry for entry in _entries(folder) if entry.is_dir()]


def _is_graft_output(folder: Path) -> bool:
    """A folder graft wrote: it holds a marker, or the record files of an older graft's run or compare."""
    def has(name: str) -> bool:
        return os.path.lexists(os.path.join(folder, name))

    return any(map(has, (RUN_MARKER, OUTPUT_MARKER))) or any(all(map(has, pair)) for pair in _OLD_OUTPUT_FILES)


def _holds_graft_output(names: set[str]) -> bool:
    """`_is_graft_output` from a folder's listing, which the scan has anyway."""
    return bool(names & {RUN_MARKER, OUTPUT_MARKER}) or any(names.issuperset(pair) for pair in _OLD_OUTPUT_FILES)


_OUTPUT_REASON = "graft's own output"


@dataclass
class _Class:
    """One class folder being read: its images (path as found, real path), skipped files, and the
    graft output folders found inside it."""

    folder: Path
    images: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    output: list[Path] = field(default_factory=list)
    dropped: bool = False  # the class folder itself is graft's output, or an ignored link


class _Scan:
    """Reading the class folders of a data folder's splits, in two passes.

    Real folders are read first, in the order `os.walk` uses (a folder's files, then its subfolders,
    sorted): the seeded train/val split depends on that order. Folder links are followed after, so
    that a link is recognised as leading to a folder already read whatever the names' order; a
    link's target is read at most once: no loops, and `everything -> .` is not a class of duplicates.
    Files reached twice all the same (two links, one above the other) are found by `check_duplicates`.
    """

    def __init__(self, root: Path, split_folders: Iterable[Path]):
        self.root = root
        self.real_root = os.path.realpath(root)
        self.skipped: list[SkippedFile] = []
        self.ignored: list[SkippedFile] = []
        self._seen: dict[str, Path] = {self.real_root: root}  # real folder -> where it was read
        self._split_folders = [os.path.realpath(folder) for folder in split_folders]
        for real, folder in zip(self._split_folders, split_folders):
            self._seen.setdefault(real, folder)
        self._links: list[tuple[Path, _Class]] = []
        self._classes: list[_Class] = []

    def class_folders(self, folder: Path) -> dict[str, _Class]:
        """Each visible subfolder of `folder` is a class; its images (at any depth) are the class's.

        Images lying loose next to the class folders have no label: they are reported, not used.
        """
        entries = _entries(folder)
        loose = [entry for entry in entries if entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS]
        self.skipped.extend(SkippedFile(image, "not inside a class folder, so it has no label") for image in loose)
        folders = [entry for entry in entries if entry.is_dir()]
        if not folders:
            found = f" ({_count(len(loose), 'image')} directly in it)" if loose else ""
            raise DataError(f"No class folders in {folder}{found}. Put each class's images in its own "
                            f"folder, e.g. {folder / 'cats' / '1.jpg'} and {folder / 'dogs' / '2.jpg'}, or list "
                            f"each image's labels in {folder / 'metadata.jsonl'} (file_name and label or labels).")
        real_folder = os.path.realpath(folder)
        by_class: dict[str, _Class] = {}
        for class_folder in folders:
            found_class = by_class[class_folder.name] = _Class(class_folder)
            self._classes.append(found_class)
            if class_folder.is_symlink():
                self._links.append((class_folder, found_class))
            else:
                self._walk(class_folder, os.path.join(real_folder, class_folder.name), found_class)
        return by_class

    def follow_links(self) -> None:
        """Read the folders that links lead to, once each: links met on the way join the queue."""
        index = 0
        while index < len(self._links):
            link, into = self._links[index]
            index += 1
            real = os.path.realpath(link)
            reason = self._link_problem(real)
            if reason is None:
                self._walk(link, real, into)
                continue
            self.ignored.append(SkippedFile(link, reason))
            if link == into.folder:
                into.dropped = True

    def images(self, by_class: dict[str, _Class]) -> ImagesByClass:
        """The images of the classes kept; a folder of nothing but graft's output is output too."""
        images: ImagesByClass = {}
        for name, found in by_class.items():
            if found.output and not found.images and not found.dropped:
                found.dropped, found.output = True, [found.folder]  # an output root, e.g. runs/
            self.ignored.extend(SkippedFile(folder, _OUTPUT_REASON) for folder in found.output)
            if not found.dropped:
                self.skipped.extend(found.skipped)
                images[name] = [path for path, _ in found.images]
        return images

    def check_duplicates(self, root: Path) -> None:
        """The same file reached twice (by links): a DataError naming both places, as for a CSV."""
        first: dict[str, Path] = {}
        repeated = []
        for found in self._classes:
            for path, real in [] if found.dropped else found.images:
                if real in first:
                    repeated.append(f"{first[real]} and {path}")
                else:
                    first[real] = path
        if repeated:
            raise DataError(f"{root} holds the same image file more than once, through links: {_first(repeated)}. "
                            "An image under two classes, or in train and val, makes the accuracy wrong; "
                            "remove the links (or copies) so that each image is in one place.")

    def _link_problem(self, real: str) -> str | None:
        if real == self.real_root:
            return "link to the data folder itself"
        if self.real_root.startswith(real.rstrip(os.sep) + os.sep):
            return "link to a folder above the data folder"
        if real in self._seen:
            return f"link to {self._shown(self._seen[real])}, already part of the data"
        for split_folder in self._split_folders:  # read now or not (evaluation reads one split)
            below = real.removeprefix(split_folder + os.sep)
            if below != real and not any(map(_is_ignored, below.split(os.sep))):
                return f"link to {self._shown(self.root / os.path.relpath(real, self.real_root))}, already part of the data"
        return None

    def _shown(self, path: Path) -> str:
        if path == self.root:
            return "the data folder itself"
        return (str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)) + "/"

    def _walk(self, top: Path, real_top: str, into: _Class) -> None:
        """Add the images below `top` (whose real path is `real_top`) to `into`, real folders only:
        links to folders are queued. Unreadable subfolders are skipped and reported."""
        stack = [(top, real_top)]
        while stack:
            folder, real = stack.pop()
            try:
                with os.scandir(folder) as listing:
                    entries = sorted(listing, key=lambda entry: entry.name)
            except OSError as error:
                if folder == into.folder:
                    raise DataError(f"Cannot read the folder {folder} ({error.strerror}); check that it "
                                    "exists and that you may read it.") from None
                into.skipped.append(SkippedFile(folder, f"folder not read ({error.strerror}); make it readable"))
                continue
            if _holds_graft_output({entry.name for entry in entries}):
                into.output.append(folder)
                if folder == into.folder:
                    into.dropped = True
                continue
            self._seen.setdefault(real, folder)
            subfolders = []
            for entry in entries:
                if _is_ignored(entry.name):
                    continue
                path = Path(entry.path)
                if _entry_is_dir(entry):
                    if entry.is_symlink():
                        self._links.append((path, into))
                    else:
                        subfolders.append((path, os.path.join(real, entry.name)))
                elif _is_image(path, into.skipped):
                    file_real = os.path.realpath(path) if entry.is_symlink() else os.path.join(real, entry.name)
                    into.images.append((path, file_real))
            stack.extend(reversed(subfolders))  # popped in sorted order: os.walk's top-down order


def _entry_is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows links; a broken link is a file (reported when read)
    except OSError:
        return False


def _is_image(path: Path, skipped: list[SkippedFile]) -> bool:
    """True for image extensions; anything else is recorded in `skipped` with its extension."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    extension = f"extension {path.suffix}" if path.suffix else "no file extension"
    skipped.append(SkippedFile(path, f"not an image ({extension})"))
    return False


# -- Checks ------------------------------------------------------------------------------------


def _check_classes(data: _Source, images: ImagesBySplit) -> list[str]:
    """The sorted class names, once there are images, the same classes in every split, at least
    two classes, and no empty class."""
    if not any(paths for by_class in images.values() for paths in by_class.values()):
        skipped = f" ({_count(len(data.skipped), 'other file')} skipped)" if data.skipped else ""
        raise DataError(f"No images found in {data.path}{skipped}{_ignored_note(data)}; graft reads {_extensions()}.")
    classes = sorted(images["train"])
    _check_same_classes(data, images, classes)
    if len(classes) < 2:
        raise DataError(f"Only one class ({classes[0]!r}) in {data.where('train')}{_ignored_note(data)}: need at least two "
                        "classes to train a classifier. Add a folder (or label) per class.")
    _check_no_empty_class(data, images, Counter())
    return classes


def _check_same_classes(data: _Source, images: ImagesBySplit, classes: list[str]) -> None:
    problems = []
    for split, by_class in images.items():
        missing, extra = sorted(set(classes) - set(by_class)), sorted(set(by_class) - set(classes))
        if missing:
            problems.append(f"missing in {data.where(split)}: {', '.join(missing)}")
        if extra:
            problems.append(f"not in {data.where('train')} but in {data.where(split)}: {', '.join(extra)}")
    if problems:
        kind = "labels" if data.is_label_file else "class folders"
        raise DataError(f"The splits of {data.path} have different classes ({'; '.join(problems)}){_ignored_note(data)}. "
                        f"Every split needs the same {kind}.")


def _check_no_empty_class(data: _Source, images: ImagesBySplit, dropped: Counter) -> None:
    for split, by_class in images.items():
        for name, paths in by_class.items():
            if not paths:
                unreadable = dropped[split, name]
                detail = f" (its {_count(unreadable, 'image')} unreadable: see the skipped files)" if unreadable else ""
                raise DataError(f"Class {name!r} has no images in {data.where(split, name)}{detail}. "
                                "Add images to it, or remove it.")


def _drop_unreadable(images: ImagesBySplit, skipped: list[SkippedFile], workers: int | None) -> Counter:
    """Decode every image once; move unreadable ones to `skipped`. Returns counts per (split, class)."""
    paths = [path for by_class in images.values() for paths in by_class.values() for path in paths]
    reasons = _unreadable(paths, workers)
    dropped: Counter = Counter()
    if not reasons:
        return dropped
    skipped.extend(SkippedFile(path, reason) for path, reason in reasons.items())
    for split, by_class in images.items():
        for name, paths in by_class.items():
            by_class[name] = [path for path in paths if path not in reasons]
            dropped[split, name] = len(paths) - len(by_class[name])
    return dropped


def _unreadable(paths: list[Path], workers: int | None) -> dict[Path, str]:
    """Why each unreadable image cannot be read, decoding in threads (Pillow releases the GIL).

    A file list found all readable is remembered by its `files_fingerprint` (paths, sizes, times,
    inodes) in the cache folder, so a second run on unchanged data skips the decoding: it was most
    of a cached linear-probe run's time (docs/benchmarks.md, "5. Cache reuse").
    """
    marker = _checked_marker(paths)
    if marker is not None and marker.exists():
        return {}
    workers = min(8, os.cpu_count() or 1) if workers is None else max(1, workers)
    if workers == 1:
        reasons = list(map(_read_problem, paths))
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="graft-check") as pool:
            reasons = list(pool.map(_read_problem, paths))
    found = {path: reason for path, reason in zip(paths, reasons) if reason is not None}
    if marker is not None and not found:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(marker, b"")  # empty: its name is the record
        except OSError:
            pass  # a read-only cache only costs the next run this check again
    return found


def _checked_marker(paths: list[Path]) -> Path | None:
    from ..runtime import cache_root

    try:
        # The decode size in place of labels: a check at another size is another check.
        fingerprint = files_fingerprint(paths, [CHECK_DRAFT_SIZE] * len(paths))
    except OSError:
        return None  # a file vanished: check everything, and say which
    return cache_root() / "checked" / fingerprint[:32]


def _read_problem(path: Path) -> str | None:
    try:
        load_image(path, draft_size=CHECK_DRAFT_SIZE)
    except BadImageError as error:
        return error.reason
    return None


def _extensions() -> str:
    return " ".join(sorted(IMAGE_EXTENSIONS))


# -- Splitting and labelling -------------------------------------------------------------------


def _split_train(data: _Source, by_class: ImagesByClass, val_split: float, seed: int) -> tuple[ImagesByClass, ImagesByClass]:
    """Split each class on its own, so every class is in both splits in the right proportion.

    One stratified split over all images can leave a small class out of val entirely.
    """
    from sklearn.model_selection import train_test_split  # deferred: importing sklearn takes a second

    train: ImagesByClass = {}
    val: ImagesByClass = {}
    for name, paths in by_class.items():
        if len(paths) < 2:
            raise DataError(f"Class {name!r} has only {len(paths)} image ({data.where('train', name)}): "
                            "too few to put at least one in train and one in val. Add images to it, "
                            "or give your own val/ folder.")
        val_count = min(max(math.floor(val_split * len(paths) + 0.5), 1), len(paths) - 1)
        train[name], val[name] = train_test_split(paths, test_size=val_count, random_state=seed)
    return train, val


def _samples(by_class: ImagesByClass, classes: list[str]) -> list[Sample]:
    label = {name: index for index, name in enumerate(classes)}
    return sorted((Sample(path, label[name]) for name, paths in by_class.items() for path in paths),
                  key=lambda sample: sample.path)


# -- Multi-label data --------------------------------------------------------------------------


def _find_labelled(data: _Source, val_split: float, seed: int, check_images: bool, workers: int | None) -> DataSplits:
    """`find_data` for multi-label data: the same checks as for classes (a label is a class), each
    image's set of classes, and val split off by iterative stratification where there is none."""
    images = data.labelled(data.splits)
    classes = _check_classes(data, _by_label(images))
    if check_images:
        dropped = _drop_unreadable_labelled(images, data.skipped, workers)
        _check_no_empty_class(data, _by_label(images, classes), dropped)
    layout = data.layout
    if "val" not in images:
        images["train"], images["val"] = _split_labelled(data, images["train"], classes, val_split, seed)
        layout += f"; val is {val_split:.0%} of the images, stratified by label (iterative), seed {seed}"
    samples = {split: _labelled_samples(found, classes) for split, found in images.items()}
    return DataSplits(classes, samples["train"], samples["val"], samples.get("test", []), data.skipped,
                      str(data.path), layout, data.ignored, task="multilabel")


def _by_label(images: LabelledBySplit, classes: Iterable[str] = ()) -> ImagesBySplit:
    """Each split's images by class (`classes` always, even without images), an image under each of
    its classes: what the class checks read."""
    by_split: ImagesBySplit = {}
    for split, found in images.items():
        by_class = by_split[split] = {name: [] for name in classes}
        for path, names in found:
            for name in names:
                by_class.setdefault(name, []).append(path)
    return by_split


def _drop_unreadable_labelled(images: LabelledBySplit, skipped: list[SkippedFile], workers: int | None) -> Counter:
    """`_drop_unreadable` for multi-label data: each image decoded once, whatever its classes."""
    reasons = _unreadable([path for found in images.values() for path, _ in found], workers)
    dropped: Counter = Counter()
    if reasons:
        skipped.extend(SkippedFile(path, reason) for path, reason in reasons.items())
        for split, found in images.items():
            dropped.update((split, name) for path, names in found if path in reasons for name in names)
            images[split] = [(path, names) for path, names in found if path not in reasons]
    return dropped


def _split_labelled(data: _Source, found: list[tuple[Path, tuple[str, ...]]], classes: list[str], val_split: float,
                    seed: int) -> tuple[list[tuple[Path, tuple[str, ...]]], list[tuple[Path, tuple[str, ...]]]]:
    """Split multi-label images (sorted by path: the split does not depend on the file's row order)
    so that each class keeps its share in train and val, at least one image of it in each."""
    from .stratify import iterative_split

    per_class = Counter(name for _, names in found for name in names)
    for name in classes:
        if per_class[name] < 2:
            raise DataError(f"Label {name!r} has only {per_class[name]} image ({data.where('train', name)}): "
                            "too few to put at least one in train and one in val. Add images of it, or give "
                            "your own val rows (a split column).")
    val = iterative_split(sample_targets(_labelled_samples(found, classes), len(classes), "multilabel"), val_split, seed)
    return [item for item, chosen in zip(found, val) if not chosen], [item for item, chosen in zip(found, val) if chosen]


def _labelled_samples(found: list[tuple[Path, tuple[str, ...]]], classes: list[str]) -> list[Sample]:
    index = {name: position for position, name in enumerate(classes)}
    return sorted((Sample(path, -1, tuple(sorted(index[name] for name in names))) for path, names in found),
                  key=lambda sample: sample.path)
