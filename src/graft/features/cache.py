"""The feature cache: an on-disk store of backbone features, so a frozen backbone runs once per
image and view. `FeatureCache` is its front: get, build, entries, verify, partials, remove.

Each entry is a folder named by a hash of everything that changes the features: the backbone,
its weights, the preprocessing, the cut stage, the augmentation and view index, and the file list
(graft.fingerprint). Features are float16 in a memory-mapped .npy, written in batches as they are
computed, so a set larger than RAM streams through. The cache lives in `features/` under graft's
cache folder (graft.runtime.cache_root: --cache-dir, else $GRAFT_CACHE, else ~/.cache/graft).

The parts, one module each:
- graft.features.entry: the entry's files and format, and the checks every read makes (its files,
  their shapes and types against meta.json, and, up to CHECKSUM_ON_READ_BYTES, a CRC-32 of the
  features); a damaged entry is reported, removed and built again;
- graft.features.writing: writing an entry, its space reserved first (a full disk is an error
  message up front, never a crash halfway through), rows made durable as they come; a cache folder
  that cannot be written costs only the reuse: features are then built in a temporary folder;
- graft.features.partial: an entry is built in a partial folder and renamed into place only when
  complete; claims, owners and locks decide who builds it, and an interrupted build is resumed;
- graft.features.reuse: the rows of unchanged files (and of copies of extracted files, by their
  bytes) taken from earlier entries with the same settings, so a list of files that changed a
  little costs only its new files' extraction;
- graft.features.derived: results computed from the features, kept inside their entry.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GraftError
from ..fingerprint import content_digest
from ..io import fsync_path
from .entry import (
    OWNER_FILE,
    PARTIAL_PREFIX,
    PROGRESS_FILE,
    CacheEntry,
    DamagedEntry,
    FeatureSet,
    describe_entry,
    open_entry,
    warn,
)
from .partial import Lock, PartialBuild, claim, partial_info, release, try_lock, unlock
from .reuse import Reuse, find_reuse, superseded
from .writing import (
    DISK_FULL,
    UNWRITABLE,
    Fill,
    build_in_temporary,
    disk_full,
    entry_bytes,
    warn_unwritable,
    write_entry,
)


def default_cache_dir() -> Path:
    """Where features are cached by default: features/ in graft.runtime.cache_root()."""
    from ..runtime import cache_root

    return cache_root() / "features"


@dataclass
class Removal:
    """What `FeatureCache.remove` did."""

    entries: int = 0  # complete (or damaged) entries removed
    partials: int = 0  # abandoned partial builds removed
    kept: list[PartialBuild] = field(default_factory=list)  # partial builds still being written
    missing: list[str] = field(default_factory=list)  # keys asked for that are not in the cache
    failed: list[str] = field(default_factory=list)  # "path: reason" for what could not be removed


class FeatureCache:
    """The features cached in the folder `root` (default: `default_cache_dir()`)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    @property
    def engines(self) -> Path:
        """Where the graphs that extract these features are kept (graft.engines): beside the cache."""
        return self.root.parent / "engines"

    # Reading

    def get(self, key: str) -> FeatureSet | None:
        """The entry `key`, checked; None when there is none. A damaged entry is reported on stderr
        and removed, so the caller builds it again."""
        folder = self.root / key
        if not folder.exists():
            return None
        try:
            return open_entry(folder, checksum=None)
        except DamagedEntry as damage:
            self._drop_damaged(folder, str(damage))
            return None

    def entries(self) -> list[CacheEntry]:
        """Every complete entry, with the problem of each damaged one (cheap checks: no checksum)."""
        return [describe_entry(folder, checksum=False) for folder in self._folders() if not _is_hidden(folder)]

    def verify(self) -> list[CacheEntry]:
        """The damaged entries, found with every check including the features' checksum."""
        rows = [describe_entry(folder, checksum=True) for folder in self._folders() if not _is_hidden(folder)]
        return [row for row in rows if row.problem]

    def reusable(self, settings: str, digests: np.ndarray, paths: Sequence, *, dim: int) -> Reuse:
        """The rows of the files `paths` (their graft.features.reuse.identity_digests `digests`)
        that complete entries with the settings key `settings` hold, by file identity, else by the
        files' bytes (read only for files no identity matches); those sharing the most files first.
        Each entry used is checked as `get` checks it, and a damaged one is reported and removed."""
        try:
            folders = [folder for folder in self._folders() if not _is_hidden(folder)]
        except GraftError:  # a cache folder that cannot be read: nothing to reuse; building says why
            return Reuse(count=len(digests))
        return find_reuse(folders, settings, digests, dim=dim, drop_damaged=self._drop_damaged,
                          content_of=lambda row: content_digest(paths[row]))

    def superseded(self) -> list[CacheEntry]:
        """The entries a newer entry with the same settings holds whole (graft.features.reuse.superseded):
        removing them loses no extraction, as a list of their files takes every row back from it."""
        folders = [folder for folder in self._folders() if not _is_hidden(folder)]
        return [describe_entry(folder, checksum=False) for folder in superseded(folders)]

    def partials(self) -> list[PartialBuild]:
        """Partial builds: in progress, or abandoned by a process that died."""
        return [partial_info(folder) for folder in self._folders() if folder.name.startswith(PARTIAL_PREFIX)]

    # Writing

    def build(
        self,
        key: str,
        *,
        count: int,
        dim: int,
        labels: np.ndarray,
        describe: dict,
        fill: Fill,
        files: np.ndarray | None = None,
        contents: np.ndarray | None = None,
    ) -> FeatureSet:
        """Create an entry: `fill(out, start, written)` writes rows into `out`, a float16 memmap of
        shape (count, dim): rows `start` onwards (those before are on disk already), in order,
        calling `written(rows)` whenever out[:rows] are written, so they are made durable and
        recorded. An interrupted build keeps what was recorded, and the next build of `key` (in
        this process or another) calls `fill` with that `start`. `files` and `contents`: each row's
        file identity and content digest (graft.features.reuse), kept so that later entries can
        reuse the rows.

        Where the cache folder cannot be written, the features are built in a temporary folder
        instead (one warning per folder and process) and not kept."""
        labels = np.asarray(labels, dtype=np.int64)
        try:
            partial, start, lock = claim(self.root, key, count=count, dim=dim)
        except OSError as error:
            if error.errno in DISK_FULL:
                raise disk_full(self.root, entry_bytes(count, dim), error) from error
            if error.errno not in UNWRITABLE:
                raise
            warn_unwritable(self.root, error)
            return build_in_temporary(key, count=count, dim=dim, labels=labels, describe=describe, fill=fill)
        try:  # a private folder (lock False) is never resumed: no progress to record
            write_entry(partial, key, count=count, dim=dim, labels=labels, describe=describe, fill=fill,
                        cache_root=self.root, start=start, resumable=lock is not False, files=files,
                        contents=contents)
            (partial / PROGRESS_FILE).unlink(missing_ok=True)
            (partial / OWNER_FILE).unlink()
            return self._publish(partial, key)
        except BaseException:
            if (partial / PROGRESS_FILE).exists():
                release(partial)  # rows are recorded: the next build goes on from them
            else:
                shutil.rmtree(partial, ignore_errors=True)
            raise
        finally:
            unlock(lock)

    def remove(self, keys: list[str] | None = None) -> Removal:
        """Delete the given entries; with None, every entry and every abandoned partial build,
        keeping the partial builds other processes are still writing."""
        removal = Removal()
        folders = self._folders()
        if keys is not None:
            names = {folder.name for folder in folders}
            removal.missing = [key for key in dict.fromkeys(keys) if key not in names]
        for folder in folders:
            partial = folder.name.startswith(PARTIAL_PREFIX)
            if keys is not None:
                if folder.name not in keys:
                    continue
            lock: Lock = None
            if partial and keys is None:
                info = partial_info(folder)
                lock = try_lock(folder) if info.abandoned else None
                if not info.abandoned or lock is False:  # lock False: a build is taking it over now
                    removal.kept.append(info)
                    continue
            try:
                shutil.rmtree(folder) if folder.is_dir() and not folder.is_symlink() else folder.unlink()
            except FileNotFoundError:
                continue  # removed meanwhile: by another `graft cache rm`, or a build that finished
            except OSError as error:
                removal.failed.append(f"{folder}: {error.strerror or error}")
                continue
            finally:
                unlock(lock)
            if partial:
                removal.partials += 1
            else:
                removal.entries += 1
        return removal

    # Inside

    def _folders(self) -> list[Path]:
        try:
            return sorted(self.root.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as error:
            raise GraftError(f"Cannot read the feature cache {self.root}: {error.strerror or error}. "
                             "Check its permissions, or point GRAFT_CACHE (or --cache-dir) at another folder.") from error

    def _publish(self, partial: Path, key: str) -> FeatureSet:
        """Rename the finished `partial` to the entry `key`. If another process finished the same
        entry first (the rename finds the folder there), keep theirs and drop ours; a damaged
        folder in the way is removed first."""
        target = self.root / key
        for _ in range(3):
            try:
                os.replace(partial, target)
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            else:
                fsync_path(self.root)
                return open_entry(target, checksum=False)
            try:
                theirs = open_entry(target, checksum=False)
            except DamagedEntry as damage:
                self._drop_damaged(target, str(damage), then="replaced it", strict=True)
                continue
            shutil.rmtree(partial, ignore_errors=True)
            return theirs
        raise GraftError(f"The feature cache entry {target} keeps changing while graft writes it: another process "
                         "is writing the same features. Run again when it is done.")

    def _drop_damaged(self, folder: Path, reason: str, *, then: str = "the features are computed again",
                      strict: bool = False) -> None:
        """Report a damaged entry on stderr and remove it (renamed aside first, so the entry's name
        is free at once and an interrupted removal leaves only an abandoned partial build)."""
        aside = self.root / f"{PARTIAL_PREFIX}{folder.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.replace(folder, aside)
        except FileNotFoundError:
            return  # another process removed it first
        except OSError as error:
            if strict:
                raise GraftError(f"The feature cache entry {folder} is damaged ({reason}) and cannot be removed "
                                 f"({error.strerror or error}). Remove it by hand: rm -r {folder}") from error
            warn(f"the feature cache entry {folder} is damaged ({reason}) and cannot be removed "
                 f"({error.strerror or error}); the features are computed without the cache. "
                 "Remove it with `graft cache verify --fix`, or by hand.")
            return
        shutil.rmtree(aside, ignore_errors=True)
        warn(f"the feature cache entry {folder} was damaged ({reason}); removed it, {then}.")


def _is_hidden(folder: Path) -> bool:
    return folder.name.startswith(".")
