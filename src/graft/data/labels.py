"""Label files: a CSV, TSV or JSONL file naming each image and its label or labels, and the metadata
files of Hugging Face's imagefolder layout. Read here, checked here, before any image is opened.

- CSV (`.csv`; semicolons or tabs are read where the header has no comma) or TSV (`.tsv`): a header
  row naming a path column, a label column and optionally a `split` column (train, val or test), in
  any order, any case. Path columns: `path`, `file_name`, `image_name` and the other `PATH_COLUMNS`;
  label columns: `label` (one label a cell) or `labels`, `tags` (several), see `LABEL_COLUMNS`.
- JSONL (`.jsonl`): one JSON object a line with the same keys; a label is a string or a list.
- Hugging Face imagefolder: `metadata.csv` or `metadata.jsonl` (`file_name` and `label` or `labels`)
  in the data folder, or one in each of its train/, val/ (valid/, validation/) and test/ folders.

A label cell holds one label or several: a list (`["daisy", "roses"]`, as JSON or as pandas writes
a Python list), labels separated by `|`, `;` or `,` (inside quotes in a CSV), or, in a column named
for several labels (`labels`, `tags`), separated by spaces, unless the file separates labels with
`|`, `;` or `,` (then a space is part of a label: `golden retriever|cat`). In a `label` column a
space is part of the label, as it always was. `[]` marks an image that has none of the labels.

Paths are read from the label file's folder. A path without an image extension (Planet's
`image_name,tags`: `train_0`) is the one image of that name with an image extension.

Every problem raises a `DataError` naming the file, the line and the fix: rows without a path or a
label, unknown columns (a misspelt `split` column would otherwise be ignored in silence), a missing
header row, split values other than train/val/test, labels that differ only in case, files listed
twice, files that do not exist.
"""

from __future__ import annotations

import ast
import csv
import difflib
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import DataError
from .images import IMAGE_EXTENSIONS

PATH_COLUMNS = ("path", "file_name", "filename", "file_path", "filepath", "image", "image_name", "image_path")
LABEL_COLUMNS = ("label", "class", "category", "tag")  # one label a cell (spaces belong to it)
LABELS_COLUMNS = ("labels", "classes", "categories", "tags")  # several labels a cell, spaces separate them too
SPLIT_COLUMN = "split"
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
METADATA_NAMES = ("metadata.csv", "metadata.jsonl")  # Hugging Face's imagefolder
LABEL_FILE_SUFFIXES = (".csv", ".tsv", ".jsonl")
TASKS = ("auto", "single", "multilabel")
NO_LABEL = "[]"  # the cell of an image that has none of the labels

_SEPARATOR = re.compile(r"[|;,]")
_SHOWN = 5  # how many offending rows or files an error message lists
_KINDS = {".csv": "CSV", ".tsv": "TSV file", ".jsonl": "JSONL file"}


@dataclass(frozen=True)
class LabelRow:
    """One image of a label file: `file` is `text` (the path as written) read from the file's folder."""

    source: Path
    line: int
    text: str
    file: Path
    labels: tuple[str, ...]
    split: str


@dataclass
class LabelRows:
    """The rows of the label file (or the imagefolder's metadata files), checked.

    `presplit` is true when the files give the splits (a split column, or split folders).
    """

    source: Path  # the label file, or the imagefolder's data folder
    files: list[Path]
    rows: list[LabelRow]
    presplit: bool
    layout: str


@dataclass(frozen=True)
class _Record:
    """One row as read, before its values are checked: `label` is a cell's text or a JSON value."""

    line: int
    path: str
    label: object
    several: bool  # the label column is named for several labels (labels, tags)
    split: str | None  # None: no split column


# -- Public API --------------------------------------------------------------------------------


def is_label_file(path: Path) -> bool:
    return path.suffix.lower() in LABEL_FILE_SUFFIXES


def read_label_file(path: Path) -> LabelRows:
    """The checked rows of a CSV, TSV or JSONL label file; a row without a split column is train."""
    rows, split_column = _read(path)
    _check_rows(path, rows)
    layout = _KINDS[path.suffix.lower()] + (" file" if path.suffix.lower() == ".csv" else "")
    return LabelRows(path, [path], rows, split_column, layout + (" with a split column" if split_column else ""))


def metadata_file(folder: Path) -> Path | None:
    """The imagefolder metadata file (metadata.csv or metadata.jsonl) in `folder`, if any."""
    found = [folder / name for name in METADATA_NAMES if (folder / name).is_file()]
    if len(found) > 1:
        raise DataError(f"{folder} has both metadata.csv and metadata.jsonl; keep one (graft reads one "
                        "metadata file a folder, as Hugging Face's imagefolder does).")
    return found[0] if found else None


def split_label_files(folder: Path) -> dict[str, Path]:
    """Label files named after the splits in `folder` (train.csv, val.jsonl, test.tsv; valid and
    validation are val), each split's rows in its own file, paths read from the file's folder."""
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        split = SPLIT_NAMES.get(entry.stem.lower())
        if split is None or entry.suffix.lower() not in LABEL_FILE_SUFFIXES or not entry.is_file():
            continue
        if split in found:
            raise DataError(f"{folder} has two label files for {split}: {found[split].name} and {entry.name}; keep one.")
        found[split] = entry
    if found and "train" not in found:
        raise DataError(f"{folder} has {', '.join(file.name for file in found.values())} but no train.csv (or "
                        ".tsv, .jsonl): give the training images' labels in train.csv beside it.")
    return found


def read_split_files(root: Path, files: dict[str, Path]) -> LabelRows:
    """The checked rows of `split_label_files(root)`: each file's rows in the split it is named after."""
    rows = [row for split, file in files.items() for row in _read(file, fixed_split=split)[0]]
    _check_rows(root, rows)
    return LabelRows(root, list(files.values()), rows, True, "label files " + ", ".join(file.name for file in files.values()))


def read_imagefolder(root: Path, files: dict[str, Path]) -> LabelRows:
    """The checked rows of an imagefolder's metadata: `files` maps "" to the data folder's file, or
    each split to its folder's file. A root file's rows are in the split their path's first folder
    names (train/0001.png), else in its split column, else in train."""
    if "" in files:
        rows, split_column = _read(files[""], infer_split=True)
        presplit = split_column or any(row.split != "train" for row in rows)
        layout = f"Hugging Face imagefolder, {files[''].name}"
    else:
        rows = [row for split, file in files.items() for row in _read(file, fixed_split=split)[0]]
        presplit = True
        layout = "Hugging Face imagefolder, " + ", ".join(f"{file.parent.name}/{file.name}" for file in files.values())
    _check_rows(root, rows)
    return LabelRows(root, list(files.values()), rows, presplit, layout)


def check_task(task: str) -> None:
    if task not in TASKS:
        raise DataError(f"task {task!r} (--task) must be one of {', '.join(TASKS)}: auto reads several labels "
                        "per image as multi-label data and one as single-label data.")


def resolve_task(found: LabelRows | None, task: str) -> str:
    """"single" or "multilabel": what `task` asks, or under "auto" what the labels are (multi-label
    when any image has several labels, or none: a single-label classifier cannot learn "none")."""
    check_task(task)
    if found is None:  # class folders: one label per image
        return "multilabel" if task == "multilabel" else "single"
    several = [row for row in found.rows if len(row.labels) > 1]
    unlabelled = [row for row in found.rows if not row.labels]
    if task == "single" and (several or unlabelled):
        raise DataError(_not_single(found, several, unlabelled))
    if task == "auto":
        return "multilabel" if several or unlabelled else "single"
    return task


def counted(number: int, noun: str) -> str:
    """"1 file", "3 files"."""
    return f"{number} {noun}" + ("" if number == 1 else "s")


def first_few(items: list[str]) -> str:
    """The first few items of a list of problems, and how many more."""
    more = f"; and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return "; ".join(items[:_SHOWN]) + more


# -- Reading -----------------------------------------------------------------------------------


def _read(path: Path, *, fixed_split: str | None = None, infer_split: bool = False) -> tuple[list[LabelRow], bool]:
    """The rows of one label file, and whether it has a split column."""
    try:
        if path.suffix.lower() == ".jsonl":
            records = _jsonl_records(path)
        else:
            records = _table_records(path)
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as UTF-8.") from None
    except OSError as error:
        raise DataError(f"Cannot read {path} ({error.strerror}); check that you may read it.") from None
    split_column = any(record.split is not None for record in records)
    if split_column:  # a JSONL line without the split the others give is a mistake, as an empty CSV cell is
        records = [replace(record, split="") if record.split is None else record for record in records]
    return _rows(path, records, fixed_split, infer_split), split_column


def _table_records(path: Path) -> list[_Record]:
    with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: Excel's UTF-8 BOM
        first = handle.readline()
        handle.seek(0)
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        if delimiter == "," and "," not in first:
            delimiter = ";" if ";" in first else "\t" if "\t" in first else ","  # Excel's CSV in some locales
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            header = next(reader, None) or []
            records = [(reader.line_num, record) for record in reader if any(value.strip() for value in record)]
        except csv.Error as error:
            raise DataError(f"{path} line {reader.line_num} is not valid CSV ({error}).") from None
    names = [name.strip().lower() for name in header]
    path_column, label_column, split_column = _columns(path, names, header)
    several = names[label_column] in LABELS_COLUMNS

    def cell(record: list[str], index: int | None) -> str:
        return record[index].strip() if index is not None and index < len(record) else ""

    return [_Record(line, cell(record, path_column), cell(record, label_column), several,
                    cell(record, split_column) if split_column is not None else None) for line, record in records]


def _columns(path: Path, names: list[str], header: list[str]) -> tuple[int, int, int | None]:
    """The indexes of the path, label and split columns: each found once, and no other column."""
    paths = [index for index, name in enumerate(names) if name in PATH_COLUMNS]
    labels = [index for index, name in enumerate(names) if name in LABEL_COLUMNS + LABELS_COLUMNS]
    if not paths or not labels:
        if any(Path(name).suffix in IMAGE_EXTENSIONS or name == NO_LABEL for name in names):
            raise DataError(f"{path} has no header row: its first line ({','.join(header)}) is an image and its "
                            "labels. Add a first line naming the columns: path,label (one label per image) or "
                            "path,labels (several), and split if the file gives the splits.")
        found = ", ".join(name.strip() for name in header) or "none"
        raise DataError(f"{path} needs a header row with columns path,label (or path,labels for several labels "
                        f"per image; and optionally split); its columns are: {found}.")
    for role, found_columns in (("path", paths), ("label", labels)):
        if len(found_columns) > 1:
            raise DataError(f"{path} has {len(found_columns)} {role} columns ({', '.join(header[i].strip() for i in found_columns)}); "
                            "keep one.")
    splits = [index for index, name in enumerate(names) if name == SPLIT_COLUMN]
    known = {paths[0], labels[0], *splits[:1]}
    _refuse_unknown(path, [header[index].strip() for index in range(len(names)) if index not in known], "column")
    return paths[0], labels[0], splits[0] if splits else None


def _refuse_unknown(path: Path, unknown: list[str], what: str, lines: dict[str, int] | None = None) -> None:
    """Columns (or JSONL keys, first seen on `lines`) that are none of graft's, named with a guess."""
    if not unknown:
        return
    known = [*PATH_COLUMNS, *LABEL_COLUMNS, *LABELS_COLUMNS, SPLIT_COLUMN]
    named = []
    for name in unknown:
        close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.75)
        named.append(repr(name) + (f" (line {lines[name]})" if lines else "") + (
            f" ({close[0]}?)" if close else " (pandas' index: write the file with index=False)"
            if name in ("", "Unnamed: 0") else ""))
    raise DataError(f"{path} has {what}s graft does not read: {', '.join(named)}. graft reads a path ({', '.join(PATH_COLUMNS)}), "
                    f"the labels ({', '.join(LABEL_COLUMNS + LABELS_COLUMNS)}) and optionally split; remove the other "
                    f"{what}s (or rename them), so that no misspelt {what} is silently ignored.")


def _jsonl_records(path: Path) -> list[_Record]:
    records: list[_Record] = []
    unknown: dict[str, int] = {}
    with path.open(encoding="utf-8-sig") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as error:
                raise DataError(f"{path} line {line} is not JSON ({error.msg}); write one object a line, e.g. "
                                '{"path": "images/1.jpg", "labels": ["cat", "dog"]}.') from None
            if not isinstance(value, dict):
                raise DataError(f"{path} line {line} is not a JSON object; write one object a line, e.g. "
                                '{"path": "images/1.jpg", "labels": ["cat", "dog"]}.')
            keys = {key.strip().lower(): key for key in value}
            for name in (names := list(keys)):
                if name not in (*PATH_COLUMNS, *LABEL_COLUMNS, *LABELS_COLUMNS, SPLIT_COLUMN):
                    unknown.setdefault(keys[name], line)
            path_keys = [name for name in names if name in PATH_COLUMNS]
            label_keys = [name for name in names if name in LABEL_COLUMNS + LABELS_COLUMNS]
            if len(path_keys) > 1 or len(label_keys) > 1:
                raise DataError(f"{path} line {line} has more than one {'path' if len(path_keys) > 1 else 'label'} "
                                f"key ({', '.join(path_keys if len(path_keys) > 1 else label_keys)}); keep one.")
            image = value[keys[path_keys[0]]] if path_keys else ""
            label = value[keys[label_keys[0]]] if label_keys else None
            split = value.get(keys["split"]) if "split" in keys else None
            image = "" if image is None else image if isinstance(image, str) else str(image)
            records.append(_Record(line, image.strip(), label,
                                   bool(label_keys) and label_keys[0] in LABELS_COLUMNS,
                                   None if split is None else str(split).strip()))
    _refuse_unknown(path, list(unknown), "key", unknown)
    return records


# -- Rows --------------------------------------------------------------------------------------


class _Problem(Exception):
    """What is wrong with one row, in words (collected, then said together)."""


def _rows(path: Path, records: list[_Record], fixed_split: str | None, infer_split: bool) -> list[LabelRow]:
    """Each record's image file, labels and split; every row's problem said at once."""
    spaces = not any(isinstance(record.label, str) and _SEPARATOR.search(record.label)
                     and _as_list(record.label) is None for record in records)
    listings: dict[Path, dict[str, str]] = {}
    rows, problems = [], []
    for record in records:
        try:
            if not record.path:
                raise _Problem("empty path")
            labels = _labels(record.label, spaces=spaces and record.several)
            split = _split(record, fixed_split, infer_split)
            rows.append(LabelRow(path, record.line, record.path, _image_file(path, record.path, listings), labels, split))
        except _Problem as problem:
            problems.append(f"line {record.line}: {problem}")
    if problems:
        raise DataError(f"{path} has rows graft cannot use: {first_few(problems)}. Every row needs a path and its "
                        f"label or labels ({NO_LABEL} for an image with none of them), and split (if present) "
                        "must be train, val or test.")
    return rows


def _split(record: _Record, fixed_split: str | None, infer_split: bool) -> str:
    """train, val or test: the split column's, the split folder's, or the path's first folder's."""
    if record.split is not None:
        split = SPLIT_NAMES.get(record.split.lower())
        if split is None:
            raise _Problem(f"split {record.split!r} is not train, val or test")
        if fixed_split is not None and split != fixed_split:
            raise _Problem(f"split {record.split!r}, but the file is in the {fixed_split} folder")
        return split
    if fixed_split is not None:
        return fixed_split
    parts = Path(record.path).parts
    return SPLIT_NAMES.get(parts[0].lower(), "train") if infer_split and len(parts) > 1 else "train"


def _labels(value: object, *, spaces: bool) -> tuple[str, ...]:
    """A cell's labels (a string or a JSON value), without repeats."""
    if isinstance(value, str):
        text = value.strip()
        listed = _as_list(text)
        if listed is None:
            parts = _SEPARATOR.split(text) if _SEPARATOR.search(text) else text.split() if spaces else [text]
            parts = [part.strip() for part in parts if part.strip()]
            if not parts:
                raise _Problem("empty label")
            return tuple(dict.fromkeys(parts))
        value = listed
    if value is None:
        raise _Problem("empty label")
    if isinstance(value, int) and not isinstance(value, bool):
        return (str(value),)
    if not isinstance(value, list):
        raise _Problem(f"label {value!r} is not text or a list of text")
    if not all(isinstance(item, str | int) and not isinstance(item, bool) and str(item).strip() for item in value):
        raise _Problem(f"the list {value!r} holds something other than labels")
    return tuple(dict.fromkeys(str(item).strip() for item in value))


def _as_list(text: str) -> list | None:
    """`["a", "b"]` (JSON) or `['a', 'b']` (a Python list, as pandas writes one) as a list; else None."""
    if not (text.startswith("[") and text.endswith("]")):
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        return value if isinstance(value, list) else None
    return None


def _image_file(path: Path, text: str, listings: dict[Path, dict[str, str]]) -> Path:
    """The image `text` names, read from the label file's folder."""
    file = Path(text).expanduser()
    return _with_extension(file if file.is_absolute() else path.parent / file, listings)


def _with_extension(file: Path, listings: dict[Path, dict[str, str]]) -> Path:
    """`file`, or where it has no image extension the one image of that name with one (Planet's
    image_name column: train_0 is train_0.jpg). `listings` holds each folder's names, read once."""
    if file.suffix.lower() in IMAGE_EXTENSIONS:
        return file
    if file.parent not in listings:
        try:
            listings[file.parent] = {name.lower(): name for name in os.listdir(file.parent)}
        except OSError:
            listings[file.parent] = {}
    names = listings[file.parent]
    matches = sorted({names[key] for ext in IMAGE_EXTENSIONS if (key := (file.name + ext).lower()) in names})
    if len(matches) > 1:
        raise _Problem(f"{file.name} could be {' or '.join(matches)}: write the extension")
    return file.parent / matches[0] if matches else file


# -- Checks ------------------------------------------------------------------------------------


def _check_rows(where: Path, rows: list[LabelRow]) -> None:
    """No label written two ways, no image listed twice, every image there."""
    several = len({row.source for row in rows}) > 1

    def place(row: LabelRow) -> str:
        return f"{row.source.parent.name}/{row.source.name} line {row.line}" if several else f"line {row.line}"

    _check_case(where, rows, place)
    _check_duplicates(where, rows, place)
    missing = [row for row in rows if not row.file.is_file()]
    if missing:
        kind = _KINDS.get(missing[0].source.suffix.lower(), "label file")
        listed = [f"{place(row)}: {row.text}" + (" (a folder)" if row.file.is_dir() else "") for row in missing]
        raise DataError(f"{where} lists {counted(len(missing), 'file')} that do not exist: {first_few(listed)}. "
                        f"Relative paths are read from the {kind}'s folder, {missing[0].source.parent}; fix the paths "
                        f"or move the {kind}{_found_below(missing[0], kind)}.")


def _check_case(where: Path, rows: list[LabelRow], place) -> None:
    spellings: dict[str, dict[str, list[str]]] = {}
    for row in rows:
        for label in row.labels:
            spellings.setdefault(label.lower(), {}).setdefault(label, []).append(place(row))
    clashes = []
    for found in spellings.values():
        if len(found) > 1:
            clashes.append(" and ".join(f"{label!r} ({_places(places)})" for label, places in found.items()))
    if clashes:
        raise DataError(f"{where} has labels that differ only in case: {first_few(clashes)}. graft would read them as "
                        "different classes; write each label one way.")


def _check_duplicates(where: Path, rows: list[LabelRow], place) -> None:
    """The same image twice: a leak between splits, or labels in two rows that belong in one."""
    rows_of: dict[Path, list[LabelRow]] = {}
    for row in rows:
        rows_of.setdefault(row.file.resolve(), []).append(row)
    repeated = []
    for file, same in rows_of.items():
        if len(same) > 1:
            labels = {" ".join(row.labels) for row in same}
            said = " and ".join(f"{' '.join(row.labels) or NO_LABEL!r}" for row in same) if len(labels) > 1 else "the same labels"
            repeated.append(f"{file} ({_places([place(row) for row in same])}: {said})")
    if repeated:
        raise DataError(f"{where} lists the same file more than once: {first_few(repeated)}. List each image once, "
                        "with one split and all its labels in that one row (separated by |, or as a list).")


def _places(places: list[str]) -> str:
    more = f" and {len(places) - 3} more" if len(places) > 3 else ""
    return ", ".join(places[:3]) + more


def _found_below(row: LabelRow, kind: str) -> str:
    """Where a missing image is after all: in a folder beside the label file (Planet keeps its images
    in train-jpg/), so that the fix is one word."""
    if Path(row.text).is_absolute():
        return ""
    try:
        folders = sorted(entry for entry in row.source.parent.iterdir() if entry.is_dir())[:50]
    except OSError:
        return ""
    for folder in folders:
        try:
            found = _with_extension(folder / row.text, {})
        except _Problem:
            found = folder / row.text
        if found.is_file():
            return (f" ({row.text} is in {folder.name}/: write the paths as {folder.name}/{row.text}, or put the "
                    f"{kind} in {folder.name}/)")
    return ""


def _not_single(found: LabelRows, several: list[LabelRow], unlabelled: list[LabelRow]) -> str:
    said = []
    if several:
        row = several[0]
        said.append(f"{counted(len(several), 'image')} several labels (e.g. {row.source.name} line {row.line}: "
                    f"{', '.join(row.labels)})")
    if unlabelled:
        row = unlabelled[0]
        said.append(f"{counted(len(unlabelled), 'image')} no label (e.g. {row.source.name} line {row.line})")
    return (f"{found.source} gives {' and '.join(said)}: this is multi-label data, which this step reads as one label "
            "per image only. graft train trains on it (--task auto or multilabel); for a single-label classifier, give "
            "every image exactly one label.")

