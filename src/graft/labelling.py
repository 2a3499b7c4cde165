"""Labelling the suggested images: a person's decision per image, kept in a labels CSV as it is made,
and the labelled images copied into the training data only when the person asks.

`LabellingSession` holds graft.suggest's suggestions and the run's class names. Each decision is a
class name or "skip" (`decide`); after every decision the labels CSV is written again in full
through graft.io (a temporary file, then a rename), so an interrupted session loses nothing. The CSV
is a label file graft reads (graft.data.labels): a `path,label` header, then one row per labelled
image, its path relative to the CSV's folder where the image lies inside that folder, else absolute.
Skipped images are not rows of it (a row of a label file is a label: "skip" would be a class) but of
the skipped file beside it (`skipped_file`: labels.skipped.csv, header `path,decision`, each row's
decision "skip"), written with it, so a session that continues the files shows them skipped and the
next `graft suggest` leaves them out (`skipped_images`).

The session never replaces a file it did not write: an existing CSV whose header is `path,label`
(graft's labels file; `path,decision` for the skipped file) is continued, its rows for suggested images shown as decisions already made
and its other rows (an earlier round's) kept as they are; any other existing file is refused with a
GraftError naming it.

`copy_into_data` copies the labelled images (never the skipped ones) into the training data's class
folders: DATA/train/CLASS/ for a folder of split folders, DATA/CLASS/ for a folder of class
folders (`class_folders`); a DATA that is a label file is refused, naming it. A file name already
taken in the class folder gets a new free name (`rose.jpg`, then `rose-1.jpg`, ...), never replacing
it; an image whose exact bytes are already there under its name (or a numbered one) is not copied
again. A class the run does not know is refused: new classes are made by hand (a new class folder).

Torch-free (Pillow for thumbnails in graft.serve.labelling; here only the standard library).
"""

from __future__ import annotations

import csv
import filecmp
import io
import os
import shlex
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import GraftError
from .io import atomic_path, write_text_atomic

if TYPE_CHECKING:
    from .suggest import Suggestion

HEADER = ("path", "label")
SKIPPED_HEADER = ("path", "decision")  # the skipped file's: each row's decision is SKIP
SKIP = "skip"


@dataclass(frozen=True)
class CopiedImage:
    """One labelled image and the file it is in DATA: `copied` False where those exact bytes were
    there already (under its name or a numbered one), so nothing was written."""

    source: Path
    target: Path
    label: str
    copied: bool


@dataclass(frozen=True)
class CopyResult:
    """What `copy_into_data` did: each labelled image's file in `folder` (DATA/train or DATA), in rank order."""

    data: Path
    folder: Path
    images: list[CopiedImage]

    @property
    def copied(self) -> list[CopiedImage]:
        return [image for image in self.images if image.copied]

    @property
    def already(self) -> list[CopiedImage]:
        return [image for image in self.images if not image.copied]

    def message(self) -> str:
        """In words: how many were copied where, how many were there already, and the next step."""
        parts = [f"Copied {len(self.copied):,} labelled image(s) into {self.folder}"
                 + (f" ({', '.join(f'{count} to {label}/' for label, count in self._by_label(self.copied))})"
                    if self.copied else "")]
        if self.already:
            parts.append(f"{len(self.already):,} were there already (the same bytes) and were not copied again")
        renamed = [image for image in self.copied if image.target.name != image.source.name]
        if renamed:
            parts.append(f"{len(renamed):,} got a new name because theirs was taken (e.g. {renamed[0].target.name})")
        return "; ".join(parts) + f". Next: graft train {shlex.quote(str(self.data))}"

    @staticmethod
    def _by_label(images: list[CopiedImage]) -> list[tuple[str, int]]:
        counts: dict[str, int] = {}
        for image in images:
            counts[image.label] = counts.get(image.label, 0) + 1
        return list(counts.items())

    def to_dict(self) -> dict:
        return {"data": str(self.data), "folder": str(self.folder), "message": self.message(),
                "copied": [{"source": str(image.source), "target": str(image.target), "label": image.label}
                           for image in self.copied],
                "already": [{"source": str(image.source), "target": str(image.target), "label": image.label}
                            for image in self.already]}


def read_labels_file(path: str | Path) -> list[tuple[str, str]]:
    """The rows (path as written, label) of the labels CSV at `path`: none where there is no file, a
    GraftError naming the file where it exists and is not a labels file graft writes (header
    `path,label`), so that it is never replaced."""
    return _read_rows(path, HEADER, "a labels file graft writes")


def skipped_file(labels_csv: str | Path) -> Path:
    """Where the images skipped in the labelling of `labels_csv` are listed: NAME.skipped.csv beside it."""
    path = Path(labels_csv)
    return path.with_name(f"{path.stem}.skipped{path.suffix or '.csv'}")


def read_skipped_file(labels_csv: str | Path) -> list[str]:
    """The paths (as written) in the skipped file of `labels_csv`: none where there is none, a
    GraftError naming it where it exists and is not one graft writes (header `path,decision`)."""
    path = skipped_file(labels_csv)
    rows = _read_rows(path, SKIPPED_HEADER, "the list of skipped images graft writes")
    for text, decision in rows:
        if decision != SKIP:
            raise GraftError(f"{path} lists {text} with the decision {decision!r}, not {SKIP!r}; mend that row (or give "
                             "another file name with --labels).")
    return [text for text, _ in rows]


def skipped_images(labels_csv: str | Path) -> list[Path]:
    """The images skipped in the labelling of `labels_csv` (read_skipped_file), as paths: those
    written relative read from the file's folder."""
    folder = os.path.dirname(os.path.abspath(skipped_file(labels_csv)))
    return [Path(os.path.join(folder, text)) for text in read_skipped_file(labels_csv)]


def _read_rows(path: str | Path, header: tuple[str, str], what: str) -> list[tuple[str, str]]:
    """The rows (path as written, second column) of the CSV at `path` with `header`: none where there is
    no file; a GraftError naming the file where it is a folder, is not `what` or has a bad row."""
    path = Path(path)
    if path.is_dir():
        raise GraftError(f"--labels {path}: that is a folder; give the name of a CSV file to write the labels to "
                         "(e.g. labels.csv).")
    if not path.exists():
        return []
    foreign = (f"{path} exists and is not {what} (a CSV with the header {','.join(header)}), so graft will not replace "
               "it. Give another file name with --labels, or move that file away.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise GraftError(foreign) from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(cell.strip() for cell in rows[0]) != header:
        raise GraftError(foreign)
    found = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise GraftError(f"{path}, line {line}: expected a path and a {header[1]}, found {','.join(row)!r}; mend "
                             "the line (or give another file name with --labels).")
        found.append((row[0].strip(), row[1].strip()))
    return found


def class_folders(data: str | Path) -> Path:
    """The folder holding DATA's training class folders: DATA/train (its train split folder, as
    graft.data.find_data reads it) for a folder of split folders, DATA itself for a folder of class
    folders. A GraftError where DATA is a label file (or a folder of them), or has no train split."""
    from .data.discover import _open_source

    try:
        source = _open_source(data)
    except GraftError:
        if not Path(data).is_file():
            raise
        raise GraftError(f"--data {data} is a file graft cannot read as data: give the folder whose class folders "
                         "the labelled images are copied into (DATA/train/CLASS/ or DATA/CLASS/).") from None
    if source.rows is not None:
        where = ", ".join(str(file) for file in source.rows.files)
        raise GraftError(f"{data} is labelled by a label file ({where}), not by class folders, so graft cannot copy "
                         "images into it; add the labels CSV's rows to that file by hand, or give --data a folder "
                         "of class folders.")
    if "train" not in source.splits:
        raise GraftError(f"{data} has no train/ folder to copy the labelled images into; add one, or give --data the "
                         "folder that holds the training class folders.")
    return source.splits["train"]


class LabellingSession:
    """A person's decisions on `suggestions` (graft.suggest's, each with its image's path), one of
    `classes` or SKIP per image, written to `labels_csv` (skips to its `skipped_file`) after each; `data` is where
    `copy_into_data` copies the labelled images (None: nowhere, until one is given).

    A GraftError where `labels_csv` (or its skipped file) exists and is not one graft writes, or continues one
    that labels a suggested image with a name not in `classes`. Safe to use from several threads
    (the web page's server): one lock guards the decisions and the file."""

    def __init__(self, suggestions: Sequence[Suggestion], classes: Sequence[str], *, labels_csv: str | Path,
                 data: str | Path | None = None):
        self.items = list(suggestions)
        self.classes = list(classes)
        self.labels_csv = Path(labels_csv)
        self.data = Path(data) if data is not None else None
        self.last_copy: CopyResult | None = None
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes) or SKIP in self.classes:
            raise GraftError(f"Classes {self.classes!r}: give at least two different class names, none of them "
                             f"{SKIP!r}.")
        if any(item.path is None for item in self.items):
            raise GraftError("Every suggestion needs its image's path to be labelled; suggest with paths= given.")
        self._lock = threading.Lock()
        self._by_rank = {item.rank: item for item in self.items}
        if len(self._by_rank) != len(self.items):
            raise GraftError("The suggestions repeat a rank; give graft.suggest's suggestions as they came.")
        where = {_key(str(item.path)): item.rank for item in self.items}
        self._texts = {item.rank: self._written_path(str(item.path)) for item in self.items}  # each row's path, once
        self._decisions: dict[int, str] = {}
        self._kept: list[tuple[str, str]] = []  # the file's rows for images not suggested now: written back unchanged
        self._kept_skips: list[str] = []  # the same of the skipped file
        for text, label in read_labels_file(self.labels_csv):
            rank = where.get(_key(os.path.join(self._folder, text)))
            if rank is None:
                self._kept.append((text, label))
            elif label not in self.classes:
                raise GraftError(f"{self.labels_csv} labels {text} {label!r}, which is not one of the run's classes "
                                 f"({', '.join(self.classes)}); mend that row, or give another file name with --labels.")
            else:
                self._decisions[rank] = label
        for text in read_skipped_file(self.labels_csv):
            rank = where.get(_key(os.path.join(self._folder, text)))
            if rank is None:
                self._kept_skips.append(text)
            else:
                self._decisions.setdefault(rank, SKIP)  # labelled in the labels CSV too: the label stands
        self.continued = len(self._decisions)

    @property
    def _folder(self) -> str:
        return os.path.dirname(os.path.abspath(self.labels_csv))

    def decision(self, rank: int) -> str | None:
        """The decision on the image ranked `rank`: a class name, SKIP, or None (not decided yet)."""
        return self._decisions.get(rank)

    def decide(self, rank: int, label: str) -> None:
        """Label the image ranked `rank` as class `label` (or SKIP it), replacing an earlier decision,
        and write the labels CSV. A GraftError for a rank not suggested or a name not a class."""
        if rank not in self._by_rank:
            raise GraftError(f"No suggested image is ranked {rank!r}; the ranks are 1 to {len(self.items)}.")
        if label != SKIP and label not in self.classes:
            raise GraftError(f"{label!r} is not one of the run's classes ({', '.join(self.classes)}) nor {SKIP!r}. A new "
                             "class is not made here: put its images in a new class folder by hand.")
        with self._lock:
            self._decisions[rank] = label
            self._write()

    @property
    def labelled(self) -> int:
        return sum(label != SKIP for label in self._decisions.values())

    @property
    def skipped(self) -> int:
        return sum(label == SKIP for label in self._decisions.values())

    def progress(self) -> str:
        """"12 of 20 labelled" (and how many were skipped)."""
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        return f"{self.labelled} of {len(self.items)} labelled{skipped}"

    def rows(self) -> list[tuple[str, str]]:
        """The labels CSV's rows: the file's earlier rows for images not suggested now, then each
        labelled image in rank order (skipped ones are not rows)."""
        mine = [(self._texts[item.rank], self._decisions[item.rank]) for item in self.items
                if self._decisions.get(item.rank, SKIP) != SKIP]
        return self._kept + mine

    def _written_path(self, path: str) -> str:
        absolute = os.path.abspath(path)
        folder = self._folder
        if os.path.commonpath([folder, absolute]) == folder:
            return Path(os.path.relpath(absolute, folder)).as_posix()
        return absolute

    def skipped_rows(self) -> list[str]:
        """The skipped file's rows (paths as written): its earlier rows for images not suggested now,
        then each skipped image in rank order."""
        return self._kept_skips + [self._texts[item.rank] for item in self.items
                                   if self._decisions.get(item.rank) == SKIP]

    def _write(self) -> None:
        write_text_atomic(self.labels_csv, _csv_text(HEADER, self.rows()))
        skipped, rows = skipped_file(self.labels_csv), self.skipped_rows()
        if rows or skipped.exists():
            write_text_atomic(skipped, _csv_text(SKIPPED_HEADER, [(text, SKIP) for text in rows]))

    def copy_problem(self) -> str | None:
        """Why `copy_into_data` would be refused before copying anything (no DATA, or a DATA that is a
        label file), in words; None where it can copy."""
        if self.data is None:
            return "No DATA to copy into: give one (--data DATA)."
        try:
            class_folders(self.data)
        except GraftError as error:
            return str(error)
        return None

    def copy_into_data(self) -> CopyResult:
        """Copy every labelled image into DATA's class folder of its label (`class_folders`), never
        replacing a file (a taken name gets a free one: name-1.jpg, ...) and never copying twice (the
        same bytes already there are left as they are); skipped images are not copied. Call it only
        when the person asks."""
        if self.data is None:
            raise GraftError("No DATA to copy the labelled images into: give one (--data DATA).")
        folder = class_folders(self.data)
        done = []
        with self._lock:
            for item in self.items:
                label = self._decisions.get(item.rank, SKIP)
                if label == SKIP:
                    continue
                source = Path(str(item.path))
                target, copied = _free_target(source, folder / label)
                if copied:
                    with atomic_path(target) as temporary:
                        shutil.copyfile(source, temporary)
                done.append(CopiedImage(source, target, label, copied))
            self.last_copy = CopyResult(self.data, folder, done)
        return self.last_copy


def _csv_text(header: tuple[str, str], rows: list[tuple[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _key(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))


def _free_target(source: Path, folder: Path) -> tuple[Path, bool]:
    """Where to copy `source` in `folder`: its name, else name-1, name-2, ... (the first free one), and
    True; or a file among those names already holding the same bytes, and False."""
    stem, suffix = source.stem, source.suffix
    number = 0
    while True:
        target = folder / (source.name if number == 0 else f"{stem}-{number}{suffix}")
        if not (target.exists() or target.is_symlink()):
            return target, True
        if target.is_file() and filecmp.cmp(source, target, shallow=False):
            return target, False
        number += 1
