"""Rows reused from earlier entries: a list of files that changed a little (images added, removed,
relabelled or edited) costs only the extraction of its new and changed files.

A plain view's entry records, beside its features, each row's file identity (files.npy:
graft.fingerprint.identity_digest of path, size, mtime, inode and ctime; not the label, which does
not change the pixels) and in meta.json its settings key: everything that makes its features what
they are but the list of files (backbone, weights, preprocessing, cut, engine, precision,
transform). When an entry is missing, the complete entries with the same settings key are found by
their meta.json (files.npy is read only for those); the entries sharing the most files give their
rows first, each checked as a read checks it (a damaged one is reported, removed and never used).

A file whose identity no entry holds (new, changed, or a copy at a new path: the labelling page
copies suggested images into DATA) is then matched by its bytes: its content digest
(graft.fingerprint.content_digest, BLAKE2b of the file) against each entry's contents.npy, which
records one per row. Only those files are read for it, just before their extraction reads them
anyway (or instead of it, when a copy matches); a row taken by identity records its donor's digest.
The settings key still has to match exactly. Augmented views are never reused: a view's crop
depends on the image's index and seed. Entries made before files.npy existed give nothing, those
made before contents.npy rows by identity only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..fingerprint import FileIdentity, identity_digest
from .entry import CONTENTS_FILE, FILES_FILE, META_FILE, DamagedEntry, FeatureSet, open_entry, read_json_quietly

DIGEST_BYTES = 16
UNKNOWN = bytes(DIGEST_BYTES)  # a row whose file contents were not recorded: matches nothing
COPY_ROWS = 65536  # rows copied from an earlier entry at a time: a bounded slice in memory


def identity_digests(identities: Iterable[FileIdentity]) -> np.ndarray:
    """The rows of files.npy: one 16-byte digest per file, as a (N, 16) uint8 array."""
    joined = b"".join(identity_digest(identity) for identity in identities)
    return np.frombuffer(joined, dtype=np.uint8).reshape(-1, DIGEST_BYTES)


@dataclass
class Reuse:
    """Where some rows of a new entry come from: for each earlier entry used, the rows of the new
    entry (`rows`, increasing) and the same files' rows in that entry (`source_rows`)."""

    count: int  # rows in the new entry
    sources: list[tuple[FeatureSet, np.ndarray, np.ndarray]] = field(default_factory=list)
    contents: np.ndarray | None = None  # each row's content digest (N x 16, UNKNOWN rows zero); None: not known

    @property
    def reused(self) -> int:
        return sum(len(rows) for _, rows, _ in self.sources)

    def missing(self, start: int = 0) -> np.ndarray:
        """The rows from `start` on that no earlier entry gives, increasing: those to extract."""
        needed = np.ones(self.count, dtype=bool)
        needed[:start] = False
        for _, rows, _ in self.sources:
            needed[rows] = False
        return np.flatnonzero(needed)

    def copy_into(self, out: np.ndarray, start: int = 0) -> None:
        """Copy the reused rows from `start` on into `out` (those before it are written already)."""
        for entry, rows, source_rows in self.sources:
            keep = rows >= start
            rows, source_rows = rows[keep], source_rows[keep]
            for begin in range(0, len(rows), COPY_ROWS):
                chunk = slice(begin, begin + COPY_ROWS)
                out[rows[chunk]] = entry.features[source_rows[chunk]]


def find_reuse(folders: Iterable[Path], settings: str, digests: np.ndarray, *, dim: int,
               drop_damaged: Callable[[Path, str], None], content_of: Callable[[int], bytes]) -> Reuse:
    """The rows of the files `digests` (identity_digests) that complete entries in `folders` with
    the settings key `settings` and `dim` features hold; those entries sharing the most files
    first. A file no entry holds by identity is matched by its bytes (`content_of(row)`: its
    graft.fingerprint.content_digest, read only for those files), so a copy of an extracted file
    reuses its row. `Reuse.contents` gives every row's content digest, to record in the new entry
    (UNKNOWN where its donor recorded none). `drop_damaged(folder, reason)` deals with an entry
    that fails its checks."""
    wanted = _split(digests)
    donors = _donors(folders, settings, dim)
    targets = _rows_by(enumerate(wanted))
    donors.sort(key=lambda donor: (sum(1 for digest in donor.files if digest in targets), donor.created),
                reverse=True)
    contents = [UNKNOWN] * len(wanted)
    _take(donors, targets, "files", contents, drop_damaged)
    for rows in targets.values():  # no entry holds these files: their bytes, matched and recorded
        for row in rows:
            contents[row] = _content(content_of, row)
    _take(donors, _rows_by((row, contents[row]) for rows in targets.values() for row in rows), "contents",
          contents, drop_damaged)
    reuse = Reuse(count=len(wanted), contents=np.frombuffer(b"".join(contents), dtype=np.uint8)
                  .reshape(-1, DIGEST_BYTES))
    for donor in donors:
        if donor.pairs and donor.entry is not None:
            pairs = np.array(sorted(donor.pairs), dtype=np.int64)
            reuse.sources.append((donor.entry, pairs[:, 0], pairs[:, 1]))
    return reuse


@dataclass
class _Donor:
    """A complete entry with the wanted settings: its rows' recorded file and content digests (an
    empty list where it recorded none), and the rows it gives (new row, its row)."""

    folder: Path
    created: float
    files: list[bytes]
    contents: list[bytes]
    entry: FeatureSet | None = None
    damaged: bool = False
    pairs: list[tuple[int, int]] = field(default_factory=list)

    def open(self, drop_damaged: Callable[[Path, str], None]) -> bool:
        """Whether its entry passes a read's checks (checked once; a damaged one is dropped)."""
        if self.entry is None and not self.damaged:
            try:
                self.entry = open_entry(self.folder, checksum=None)
            except DamagedEntry as damage:
                drop_damaged(self.folder, str(damage))
                self.damaged = True
        return self.entry is not None


def _donors(folders: Iterable[Path], settings: str, dim: int) -> list[_Donor]:
    donors = []
    for folder in folders:
        meta = read_json_quietly(folder / META_FILE)
        if meta.get("settings") != settings or meta.get("dim") != dim:
            continue
        files = _recorded(folder / FILES_FILE, meta.get("count"))
        if files:
            created = float(meta["created"]) if isinstance(meta.get("created"), (int, float)) else 0.0
            donors.append(_Donor(folder, created, files, _recorded(folder / CONTENTS_FILE, meta.get("count"))))
    return donors


def _take(donors: list[_Donor], targets: dict[bytes, list[int]], column: str, contents: list[bytes],
          drop_damaged: Callable[[Path, str], None]) -> None:
    """Give each row in `targets` (digest: rows) the row of the first sound donor whose `column`
    ("files" or "contents") holds its digest, popping it from `targets`; `contents` gets the
    donor's content digest of each row it gives."""
    for donor in donors:
        if not targets:
            return
        recorded = getattr(donor, column)
        pairs = [(row, source_row) for source_row, digest in enumerate(recorded) for row in targets.pop(digest, ())]
        if not pairs:
            continue  # every file it shares is taken from an entry sharing more
        if not donor.open(drop_damaged):
            for row, source_row in pairs:  # wanted still: another entry may hold them
                targets.setdefault(recorded[source_row], []).append(row)
            continue
        donor.pairs += pairs
        for row, source_row in pairs:
            contents[row] = donor.contents[source_row] if donor.contents else UNKNOWN


def superseded(folders: Iterable[Path]) -> list[Path]:
    """The entries in `folders` that a newer sound entry with the same settings key and dim holds
    whole: each of its rows' files is one of the newer entry's rows, by file identity or by content
    digest. Removing one loses no extraction: a list of its files takes every row back from the
    newer entry (find_reuse). Newest first, each entry is weighed only against the newer ones kept,
    so the newest of a settings key always stays. Augmented views and entries without files.npy
    (no settings key or no rows recorded) are never superseded."""
    groups: dict[tuple, list[_Donor]] = {}
    for folder in folders:
        meta = read_json_quietly(folder / META_FILE)
        settings, dim = meta.get("settings"), meta.get("dim")
        if isinstance(settings, str) and isinstance(dim, int):
            for donor in _donors([folder], settings, dim):
                groups.setdefault((settings, dim), []).append(donor)
    gone = []
    for members in groups.values():
        members.sort(key=lambda donor: (donor.created, donor.folder.name), reverse=True)
        kept: list[tuple[_Donor, set[bytes], set[bytes]]] = []
        for member in members:
            contents = member.contents or [UNKNOWN] * len(member.files)
            if any(all(file in files or (content != UNKNOWN and content in held)
                       for file, content in zip(member.files, contents)) and _sound(holder)
                   for holder, files, held in kept):
                gone.append(member.folder)
            else:
                kept.append((member, set(member.files), set(member.contents) - {UNKNOWN}))
    return gone


def _sound(donor: _Donor) -> bool:
    """Whether a holder passes every check, its features' checksum included (checked once)."""
    if donor.entry is None and not donor.damaged:
        try:
            donor.entry = open_entry(donor.folder, checksum=True)
        except DamagedEntry:
            donor.damaged = True  # not removed here: `graft cache verify --fix` does that
    return donor.entry is not None


def _rows_by(digests: Iterable[tuple[int, bytes]]) -> dict[bytes, list[int]]:
    """digest: the rows that have it (an UNKNOWN digest matches nothing)."""
    rows: dict[bytes, list[int]] = {}
    for row, digest in digests:
        if digest != UNKNOWN:
            rows.setdefault(digest, []).append(row)
    return rows


def _content(content_of: Callable[[int], bytes], row: int) -> bytes:
    try:
        return content_of(row)
    except OSError:
        return UNKNOWN  # unreadable now: the extraction that follows says so


def _recorded(path: Path, count) -> list[bytes]:
    """The digests an entry recorded in `path` (files.npy or contents.npy), one per row; none where
    it has no readable such file of `count` rows (an entry from before it existed, or a damaged
    one: then it gives nothing)."""
    try:
        digests = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return []
    if digests.shape != (count, DIGEST_BYTES) or digests.dtype != np.uint8:
        return []
    return _split(digests)


def _split(digests: np.ndarray) -> list[bytes]:
    joined = np.ascontiguousarray(digests, dtype=np.uint8).tobytes()
    return [joined[start : start + DIGEST_BYTES] for start in range(0, len(joined), DIGEST_BYTES)]
