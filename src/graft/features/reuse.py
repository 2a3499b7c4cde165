"""Rows reused from earlier entries: a list of files that changed a little (images added, removed,
relabelled or edited) costs only the extraction of its new and changed files.

A plain view's entry records, beside its features, each row's file identity (files.npy:
graft.fingerprint.identity_digest of path, size, mtime, inode and ctime; not the label, which does
not change the pixels) and in meta.json its settings key: everything that makes its features what
they are but the list of files (backbone, weights, preprocessing, cut, engine, precision,
transform). When an entry is missing, the complete entries with the same settings key are found by
their meta.json (files.npy is read only for those); the entries sharing the most files give their
rows first, each checked as a read checks it (a damaged one is reported, removed and never used). Augmented views are never reused:
a view's crop depends on the image's index and seed. Entries made before files.npy existed have
none and give nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..fingerprint import FileIdentity, identity_digest
from .entry import FILES_FILE, META_FILE, DamagedEntry, FeatureSet, open_entry, read_json_quietly

DIGEST_BYTES = 16
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
               drop_damaged: Callable[[Path, str], None]) -> Reuse:
    """The rows of the files `digests` (identity_digests) that complete entries in `folders` with
    the settings key `settings` and `dim` features hold; those entries sharing the most files
    first. `drop_damaged(folder, reason)` deals with an entry that fails its checks."""
    wanted = _split(digests)
    targets: dict[bytes, list[int]] = {}
    for row, digest in enumerate(wanted):
        targets.setdefault(digest, []).append(row)
    candidates = []
    for folder in folders:
        meta = read_json_quietly(folder / META_FILE)
        if meta.get("settings") != settings or meta.get("dim") != dim:
            continue
        theirs = _recorded(folder, meta.get("count"))
        shared = sum(1 for digest in theirs if digest in targets)
        if shared:
            created = meta.get("created") if isinstance(meta.get("created"), (int, float)) else 0.0
            candidates.append((shared, created, folder, theirs))
    candidates.sort(key=lambda candidate: candidate[:2], reverse=True)
    reuse = Reuse(count=len(wanted))
    for _, _, folder, theirs in candidates:
        pairs = sorted((row, source_row) for source_row, digest in enumerate(theirs)
                       for row in targets.pop(digest, ()))
        if not pairs:
            continue  # every file it shares is taken from an entry sharing more
        try:
            entry = open_entry(folder, checksum=None)
        except DamagedEntry as damage:
            drop_damaged(folder, str(damage))
            for row, source_row in pairs:  # wanted still: another entry may hold them
                targets.setdefault(theirs[source_row], []).append(row)
            continue
        rows, source_rows = (np.array(column, dtype=np.int64) for column in zip(*pairs))
        reuse.sources.append((entry, rows, source_rows))
        if not targets:
            break
    return reuse


def _recorded(folder: Path, count) -> list[bytes]:
    """The file digests an entry recorded, one per row; none where it has no readable files.npy of
    `count` rows (an entry from before files.npy, or a damaged one: then it gives nothing)."""
    try:
        digests = np.load(folder / FILES_FILE, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return []
    if digests.shape != (count, DIGEST_BYTES) or digests.dtype != np.uint8:
        return []
    return _split(digests)


def _split(digests: np.ndarray) -> list[bytes]:
    joined = np.ascontiguousarray(digests, dtype=np.uint8).tobytes()
    return [joined[start : start + DIGEST_BYTES] for start in range(0, len(joined), DIGEST_BYTES)]
