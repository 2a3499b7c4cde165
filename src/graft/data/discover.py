"""Finding the user's labelled images, and saying exactly what is wrong when they cannot be used.

Accepted layouts (see `find_data`):

- a folder with `train/` and `val/` (or `valid/`, `validation/`) and optional `test/`, each
  holding one folder per class; with `train/` but no `val/`, `train/` is split like a flat folder;
- one folder of class folders, split into train/val per class (stratified) with a seed;
- a CSV file with columns `path,label` and optionally `split` (train/val/test).

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

import csv
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

# RUN_MARKER (in every run and compare folder graft writes) and OUTPUT_MARKER (in the output root
# graft creates, runs/) are defined where graft writes them, graft.io, and exported here too.
# Folders written by graft versions older than the markers: these files side by side.
_OLD_OUTPUT_FILES = (("graft.json", "model.safetensors"), ("compare.json", "compare.md"))

SPLITS = ("train", "val", "test")
SPLIT_FOLDER_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
CHECK_DRAFT_SIZE = (256, 256)  # checking only needs a decode, not full resolution
_SHOWN = 5  # how many offending rows or files an error message lists

_LAYOUTS = ("give a folder of class folders (data/cats/1.jpg, data/dogs/2.jpg), a folder with "
            "train/ and val/ folders of class folders, or a CSV file with columns path,label")

# A folder of class folders, or of split folders, or a CSV: the nested mapping every layout becomes.
ImagesByClass = dict[str, list[Path]]
ImagesBySplit = dict[str, ImagesByClass]


@dataclass(frozen=True)
class Sample:
    """One labelled image: `label` indexes the class list (-1 when unknown, as in prediction)."""

    path: Path
    label: int


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
    folder links that lead back into data already read (the reason says which).
    """

    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    source: str = ""
    layout: str = ""
    ignored: list[SkippedFile] = field(default_factory=list)

    def counts(self, split: str) -> dict[str, int]:
        """Images per class (every class, zeros included, in class order) in `split`."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
        per_label = Counter(sample.label for sample in getattr(self, split))
        return {name: per_label[label] for label, name in enumerate(self.classes)}

    def describe(self, max_classes: int = 20) -> str:
        """A few lines for the terminal: source, images per split and per class, skipped files."""
        splits = [split for split in SPLITS if getattr(self, split)]
        totals = ", ".join(f"{len(getattr(self, split))} {split}" for split in splits)
        skipped = f"; {_count(len(self.skipped), 'file')} skipped" if self.skipped else ""
        lines = [f"Data: {self.source}" + (f" ({self.layout})" if self.layout else ""),
                 f"{len(self.classes)} classes, images: {totals}{skipped}"]
        counts = {split: self.counts(split) for split in splits}
        shown = self.classes[:max_classes]
        width = max(map(len, shown), default=0)
        for name in shown:
            lines.append(f"  {name:<{width}}  " + "  ".join(f"{counts[s][name]:>5} {s}" for s in splits))
        if len(self.classes) > len(shown):
            lines.append(f"  ... and {len(self.classes) - len(shown)} more classes")
        lines.extend(f"  ignored {what}" for what in _ignored_phrases(self.ignored, Path(self.source)))
        return "\n".join(lines)


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


@dataclass(frozen=True)
class _Row:
    """One CSV row: `file` is resolved against the CSV's folder, `text` is the path as written."""

    line: int
    file: Path
    text: str
    label: str
    split: str


@dataclass
class _Source:
    """Where the data is and which splits it holds, before any class folder is read.

    `splits` maps each split to its folder (for a CSV: to the CSV). `presplit` is true when the
    user chose the splits (split folders or a split column), false when graft has to split.
    """

    path: Path
    splits: dict[str, Path]
    presplit: bool
    rows: list[_Row] | None = None
    skipped: list[SkippedFile] = field(default_factory=list)
    ignored: list[SkippedFile] = field(default_factory=list)

    @property
    def is_csv(self) -> bool:
        return self.rows is not None

    @property
    def layout(self) -> str:
        if self.is_csv:
            return "CSV file with a split column" if self.presplit else "CSV file"
        if self.presplit:
            return ", ".join(f"{folder.name}/" for folder in self.splits.values()) + " folders"
        return "class folders"

    def where(self, split: str, name: str | None = None) -> str:
        """Where a split (or one class of it) lives, in words for error messages."""
        if not self.is_csv:
            folder = self.splits[split]
            return str(folder / name if name else folder)
        rows = f"the {split} rows of {self.path}" if self.presplit else f"the rows of {self.path}"
        return f"{rows} labelled {name!r}" if name else rows

    def collect(self, splits: Iterable[str]) -> ImagesBySplit:
        """Image files by split and class name; other files are added to `skipped`."""
        if self.is_csv:
            return {split: self._rows_by_label(split) for split in splits}
        scan = _Scan(self.path, self.splits.values())
        found = {split: scan.class_folders(self.splits[split]) for split in splits}
        scan.follow_links()
        images = {split: scan.images(by_class) for split, by_class in found.items()}
        self.skipped.extend(scan.skipped)
        self.ignored.extend(scan.ignored)
        scan.check_duplicates(self.path)
        return images

    def _rows_by_label(self, split: str) -> ImagesByClass:
        by_label: ImagesByClass = {}
        for row in self.rows or []:
            if row.split == split and _is_image(row.file, self.skipped):
                by_label.setdefault(row.label, []).append(row.file)
        return by_label


# -- Public API --------------------------------------------------------------------------------


def find_data(
    source: str | Path,
    *,
    val_split: float = 0.2,
    seed: int = 0,
    check_images: bool = True,
    workers: int | None = None,
) -> DataSplits:
    """Find the classes and the train/val(/test) samples in `source` (a folder or a CSV).

    Classes are the sorted class-folder names (or CSV labels); a sample's label indexes them.
    Without a val split, each class is split on its own (stratified) with `val_split` and `seed`,
    so every class lands in both splits. With `check_images`, every image is decoded once, in
    `workers` threads, and unreadable ones are skipped: better now than an hour into training.
    """
    _check_split_options(val_split, seed)
    data = _open_source(source)
    if "train" not in data.splits:
        raise DataError(f"{data.path} has {_listing(data)} but no training data; add a train/ folder "
                        "(or train rows) with the same classes.")
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
    source: str | Path, classes: list[str], *, check_images: bool = True
) -> tuple[list[Sample], list[SkippedFile]]:
    """Labelled images to evaluate a model trained on `classes`, and the files skipped.

    `source` is a folder of class folders, a CSV, or a split folder (its test/ if present, else
    its val/: never train/, which the model has seen). Its classes must be among `classes`, but
    need not be all of them; labels index `classes`, the model's order.
    """
    data = _open_source(source)
    split = _evaluation_split(data)
    images = data.collect([split])
    by_class = images[split]
    unknown = sorted(set(by_class) - set(classes))
    if unknown:
        kind = "labels" if data.is_csv else "class folders"
        raise DataError(f"{data.where(split)} has {kind} the model does not know: {', '.join(unknown)}. "
                        f"The model's classes are: {', '.join(classes)}. Remove or rename them, "
                        "or evaluate a model trained on these classes.")
    if check_images:
        _drop_unreadable(images, data.skipped, None)
    samples = _samples(by_class, classes)
    if not samples:
        raise DataError(f"No readable images to evaluate in {data.where(split)}; "
                        f"graft reads {_extensions()}.")
    return samples, data.skipped


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
        return _folder_source(path)
    if path.suffix.lower() == ".csv":
        rows, has_split_column = _read_csv(path)
        splits = {split: path for split in SPLITS if any(row.split == split for row in rows)}
        return _Source(path, splits or {"train": path}, has_split_column, rows)
    hint = (" To classify one image, use graft predict; to train, give the folder that holds the class "
            "folders." if path.suffix.lower() in IMAGE_EXTENSIONS else "")
    raise DataError(f"{path} is a file but not a .csv file: {_LAYOUTS}.{hint}")


def _folder_source(root: Path) -> _Source:
    """Split folders (train/, val/, test/) when any of them holds folders, else class folders.

    Requiring subfolders keeps a flat dataset with a class called "train" (the vehicle) working.
    """
    folders = _visible_folders(root)
    output = {folder for folder in folders if _is_graft_output(folder)}
    named = {folder: SPLIT_FOLDER_NAMES.get(folder.name.lower()) for folder in folders if folder not in output}
    if not any(split and _visible_folders(folder) for folder, split in named.items()):
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
    if data.is_csv:
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
                            f"folder, e.g. {folder / 'cats' / '1.jpg'} and {folder / 'dogs' / '2.jpg'}.")
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


# -- CSV ---------------------------------------------------------------------------------------


def _read_csv(path: Path) -> tuple[list[_Row], bool]:
    """The rows of a `path,label[,split]` CSV, and whether it has a split column."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: Excel's UTF-8 BOM
            reader = csv.reader(handle)
            header = next(reader, None) or []
            records = [(reader.line_num, record) for record in reader if any(v.strip() for v in record)]
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as a UTF-8 CSV file.") from None
    except csv.Error as error:
        raise DataError(f"{path} line {reader.line_num} is not valid CSV ({error}).") from None
    except OSError as error:
        raise DataError(f"Cannot read {path} ({error.strerror}); check that you may read it.") from None
    columns = {name.strip().lower(): index for index, name in reversed(list(enumerate(header)))}
    if "path" not in columns or "label" not in columns:
        found = ", ".join(name.strip() for name in header) or "none"
        raise DataError(f"{path} needs a header row with columns path,label (and optionally split); "
                        f"its columns are: {found}.")
    rows = _parse_rows(path, records, columns)
    _check_rows(path, rows)
    return rows, "split" in columns


def _parse_rows(path: Path, records: list[tuple[int, list[str]]], columns: dict[str, int]) -> list[_Row]:
    def cell(record: list[str], column: str) -> str:
        index = columns.get(column)
        return record[index].strip() if index is not None and index < len(record) else ""

    rows, problems = [], []
    for line, record in records:
        text, label, split = cell(record, "path"), cell(record, "label"), cell(record, "split")
        role = SPLIT_FOLDER_NAMES.get(split.lower()) if "split" in columns else "train"
        if not text or not label:
            problems.append(f"line {line}: empty {'path' if not text else 'label'}")
        elif role is None:
            problems.append(f"line {line}: split {split!r} is not train, val or test")
        else:
            file = Path(text).expanduser()
            rows.append(_Row(line, file if file.is_absolute() else path.parent / file, text, label, role))
    if problems:
        raise DataError(f"{path} has rows graft cannot use: {_first(problems)}. Every row needs a path "
                        "and a label, and split (if present) must be train, val or test.")
    return rows


def _check_rows(path: Path, rows: list[_Row]) -> None:
    """Every listed file exists, and none is listed twice (a leak between splits, or two labels)."""
    missing = [f"line {row.line}: {row.text}" for row in rows if not row.file.is_file()]
    if missing:
        raise DataError(f"{path} lists {_count(len(missing), 'file')} that do not exist: {_first(missing)}. "
                        f"Relative paths are read from the CSV's folder, {path.parent}; fix the paths "
                        "or move the CSV.")
    lines_of: dict[Path, list[int]] = {}
    for row in rows:
        lines_of.setdefault(row.file.resolve(), []).append(row.line)
    repeated = [f"{file} (lines {', '.join(map(str, lines))})" for file, lines in lines_of.items() if len(lines) > 1]
    if repeated:
        raise DataError(f"{path} lists the same file more than once: {_first(repeated)}. List each "
                        "image once, with one label and one split.")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _first(items: list[str]) -> str:
    more = f"; and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return "; ".join(items[:_SHOWN]) + more


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
        kind = "labels" if data.is_csv else "class folders"
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
