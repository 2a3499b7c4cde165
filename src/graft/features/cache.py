"""An on-disk cache of backbone features, so a frozen backbone runs once per image and view.

Each entry is a folder named by a hash of everything that changes the features: the backbone,
its weights, the preprocessing, the cut stage, the augmentation and view index, and the file list
with sizes and modification times. Features are float16 in a memory-mapped .npy, written in
batches as they are computed, so a set larger than RAM streams through.

An entry is built in a partial folder (`.partial-KEY`, holding the builder's pid, host and start
time in owner.json) and renamed into place only when complete, so an interrupted extraction is
never mistaken for a finished one. The space for the features is reserved before the memory map is
written: a full disk is an error message up front, never a crash (SIGBUS) halfway through.

An interrupted extraction resumes: as batches are written, the builder makes the rows durable
(flush, fsync) and only then records their number in progress.json (atomically, at most every
PROGRESS_EVERY_S). The next build of the same key takes over a partial folder whose builder is
gone (its process ended on this host, it gave the folder up after an error, or it wrote nothing for
STALE_AFTER_S) and nobody holds locked (the builder holds an flock on the folder), checks its
features file, and computes only the rows from the recorded count on; a damaged file is started
over. A partial folder another process is writing now is left alone: this build then uses a
private one (`.partial-KEY-RANDOM`), as two concurrent runs of the same extraction always did.

Every entry is checked when it is read (its files, their shapes and types against meta.json, and,
for entries up to CHECKSUM_ON_READ_BYTES, a CRC-32 of the features); a damaged one is reported,
removed and built again. A cache folder that cannot be written costs only the reuse: features are
then built in a temporary folder, with one warning.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GraftError
from ..io import atomic_path, fsync_path, write_json_atomic

try:
    import fcntl
except ImportError:  # Windows: no flock; a partial build is then judged by its owner's pid alone
    fcntl = None  # type: ignore[assignment]

FEATURES_FILE = "features.npy"
LABELS_FILE = "labels.npy"
META_FILE = "meta.json"
OWNER_FILE = "owner.json"  # in a partial build only: who is writing it
PROGRESS_FILE = "progress.json"  # in a partial build only: how many rows are on disk for sure
PARTIAL_PREFIX = ".partial-"
FEATURES_DTYPE = np.dtype(np.float16)

# A partial build nobody has written to for this long is abandoned, whoever owns it: extraction
# writes rows every few seconds, so an hour without a write is a crashed or hung process.
STALE_AFTER_S = 3600.0
# Rows are made durable and recorded at most this often: a flush, two fsyncs and a rename cost a few
# milliseconds, more than a batch takes on a fast GPU; a kill loses at most this much extraction.
PROGRESS_EVERY_S = 1.0
# The CRC-32 of the features is checked on every read up to this size: about 4 GB/s from the page
# cache (measured: 60 ms for 256 MB on a 2-core machine, 0.15 s for SHA-256), more from a cold disk.
# Larger entries get the structural checks on read; `graft cache verify` always checks the CRC.
CHECKSUM_ON_READ_BYTES = 64 * 2**20

_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST}
_warned_unwritable: set[str] = set()

# What writes the features: fill(out, start, written), see FeatureCache.build.
Fill = Callable[[np.ndarray, int, Callable[[int], None]], None]


def default_cache_dir() -> Path:
    """$GRAFT_CACHE, else $XDG_CACHE_HOME/graft, else ~/.cache/graft; features live in features/."""
    from ..runtime import cache_root

    return cache_root() / "features"


def cache_key(parts: dict) -> str:
    """A short, stable hash of a JSON-able description of the features."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class FeatureSet:
    """Features (N x D float16, memory-mapped) and labels (N) of one split and view."""

    features: np.ndarray
    labels: np.ndarray
    meta: dict
    path: Path

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class CacheEntry:
    key: str
    path: Path
    size_bytes: int
    count: int
    dim: int
    description: str
    created: float
    problem: str | None = None  # why the entry is damaged; None when it is sound


@dataclass(frozen=True)
class PartialBuild:
    """A `.partial-*` folder: an entry being built now, or the debris of a build that died."""

    name: str
    path: Path
    key: str
    size_bytes: int
    started: float
    last_write: float
    pid: int | None
    alive: bool | None  # whether the owning process still runs; None when unknown (another host, no owner.json)
    released: bool = False  # its builder stopped (an error, Ctrl-C) and left it to be resumed

    @property
    def abandoned(self) -> bool:
        return self.alive is False or time.time() - self.last_write > STALE_AFTER_S

    @property
    def state(self) -> str:
        if self.released:
            return "interrupted (the next build of these features resumes it)"
        if self.alive is False:
            return f"abandoned (process {self.pid} is gone)"
        if self.abandoned:
            return f"abandoned (no write for {format_age(time.time() - self.last_write)})"
        return f"being built (process {self.pid})" if self.pid is not None else "being built"


@dataclass
class Removal:
    """What `FeatureCache.remove` did."""

    entries: int = 0  # complete (or damaged) entries removed
    partials: int = 0  # abandoned partial builds removed
    kept: list[PartialBuild] = field(default_factory=list)  # partial builds still being written
    missing: list[str] = field(default_factory=list)  # keys asked for that are not in the cache
    failed: list[str] = field(default_factory=list)  # "path: reason" for what could not be removed


class DamagedEntry(Exception):
    """Raised inside the cache when an entry fails its checks; never reaches a user."""


class FeatureCache:
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
            return _open_entry(folder, checksum=None)
        except DamagedEntry as damage:
            self._drop_damaged(folder, str(damage))
            return None

    def entries(self) -> list[CacheEntry]:
        """Every complete entry, with the problem of each damaged one (cheap checks: no checksum)."""
        return [self._describe(folder, checksum=False) for folder in self._folders() if not _is_hidden(folder)]

    def verify(self) -> list[CacheEntry]:
        """The damaged entries, found with every check including the features' checksum."""
        rows = [self._describe(folder, checksum=True) for folder in self._folders() if not _is_hidden(folder)]
        return [row for row in rows if row.problem]

    def partials(self) -> list[PartialBuild]:
        """Partial builds: in progress, or abandoned by a process that died."""
        return [_partial_info(folder) for folder in self._folders() if folder.name.startswith(PARTIAL_PREFIX)]

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
    ) -> FeatureSet:
        """Create an entry: `fill(out, start, written)` writes rows into `out`, a float16 memmap of
        shape (count, dim): rows `start` onwards (those before are on disk already), in order,
        calling `written(rows)` whenever out[:rows] are written, so they are made durable and
        recorded. An interrupted build keeps what was recorded, and the next build of `key` (in
        this process or another) calls `fill` with that `start`.

        Where the cache folder cannot be written, the features are built in a temporary folder
        instead (one warning per folder and process) and not kept."""
        labels = np.asarray(labels, dtype=np.int64)
        try:
            partial, start, lock = self._claim(key, count=count, dim=dim)
        except OSError as error:
            if error.errno in _DISK_FULL:
                raise _disk_full(self.root, _entry_bytes(count, dim), error) from error
            if error.errno not in _UNWRITABLE:
                raise
            _warn_unwritable(self.root, error)
            return _build_in_temporary(key, count=count, dim=dim, labels=labels, describe=describe, fill=fill)
        try:  # a private folder (lock False) is never resumed: no progress to record
            _write_entry(partial, key, count=count, dim=dim, labels=labels, describe=describe, fill=fill,
                         cache_root=self.root, start=start, resumable=lock is not False)
            (partial / PROGRESS_FILE).unlink(missing_ok=True)
            (partial / OWNER_FILE).unlink()
            return self._publish(partial, key)
        except BaseException:
            if (partial / PROGRESS_FILE).exists():
                _release(partial)  # rows are recorded: the next build goes on from them
            else:
                shutil.rmtree(partial, ignore_errors=True)
            raise
        finally:
            _unlock(lock)

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
            lock: int | bool | None = None
            if partial and keys is None:
                info = _partial_info(folder)
                lock = _try_lock(folder) if info.abandoned else None
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
                _unlock(lock)
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

    def _describe(self, folder: Path, *, checksum: bool) -> CacheEntry:
        problem = None
        meta: dict = {}
        try:
            meta = _open_entry(folder, checksum=checksum).meta
        except DamagedEntry as damage:
            problem = str(damage)
            meta = _read_meta_quietly(folder)
        return CacheEntry(
            key=folder.name,
            path=folder,
            size_bytes=_size(folder),
            count=_int_or_zero(meta.get("count")),
            dim=_int_or_zero(meta.get("dim")),
            description=f"{meta.get('backbone', '?')} {meta.get('split', '?')} view {meta.get('view', '?')}"
                        + (f" ({meta['engine']})" if meta.get("engine") else ""),
            created=meta["created"] if isinstance(meta.get("created"), (int, float)) else 0.0,
            problem=problem,
        )

    def _claim(self, key: str, *, count: int, dim: int) -> tuple[Path, int, int | bool | None]:
        """The partial folder to build `key` in, the first row still to compute, and the lock held
        on the folder (None where there is no flock).

        `.partial-KEY`: new, or taken over from a builder that is gone, with the rows it recorded
        (0 when its features file does not match). Where another process is building it now, a
        new private folder `.partial-KEY-RANDOM` that nobody resumes (its lock: False)."""
        self.root.mkdir(parents=True, exist_ok=True)
        shared = self.root / f"{PARTIAL_PREFIX}{key}"
        try:
            shared.mkdir()
        except FileExistsError:
            if shared.is_dir() and not shared.is_symlink() and _partial_info(shared).abandoned:
                lock = _try_lock(shared)
                if lock is not False:  # nobody else holds it: ours
                    try:
                        _write_owner(shared)
                        return shared, _resumable_rows(shared, count=count, dim=dim), lock
                    except BaseException:
                        _unlock(lock)
                        raise
        else:
            lock = _try_lock(shared)
            if lock is not False:  # False: another build took the new folder over before we locked it
                try:
                    _write_owner(shared)
                except BaseException:
                    _unlock(lock)
                    shutil.rmtree(shared, ignore_errors=True)
                    raise
                return shared, 0, lock
        private = self.root / f"{PARTIAL_PREFIX}{key}-{uuid.uuid4().hex[:8]}"
        private.mkdir()
        try:
            _write_owner(private)
        except BaseException:
            shutil.rmtree(private, ignore_errors=True)
            raise
        return private, 0, False

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
                return _open_entry(target, checksum=False)
            try:
                theirs = _open_entry(target, checksum=False)
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
            _warn(f"the feature cache entry {folder} is damaged ({reason}) and cannot be removed "
                  f"({error.strerror or error}); the features are computed without the cache. "
                  "Remove it with `graft cache verify --fix`, or by hand.")
            return
        shutil.rmtree(aside, ignore_errors=True)
        _warn(f"the feature cache entry {folder} was damaged ({reason}); removed it, {then}.")


# Checking an entry


def _open_entry(folder: Path, *, checksum: bool | None) -> FeatureSet:
    """The entry in `folder`, or DamagedEntry with the reason. `checksum`: True always checks the
    features' CRC-32, False never, None when the features are at most CHECKSUM_ON_READ_BYTES."""
    if not folder.is_dir():
        raise DamagedEntry("not a folder")
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise DamagedEntry(f"{META_FILE} is missing") from None
    except (OSError, ValueError) as error:  # ValueError: invalid JSON or text
        raise DamagedEntry(f"{META_FILE} cannot be read ({_short(error)})") from None
    if not isinstance(meta, dict):
        raise DamagedEntry(f"{META_FILE} is not a JSON object")
    count, dim = meta.get("count"), meta.get("dim")
    if not (_is_count(count) and _is_count(dim)):
        raise DamagedEntry(f"{META_FILE} has no valid count and dim")
    dtype = np.dtype(meta.get("dtype", FEATURES_DTYPE.name))
    features_path = folder / FEATURES_FILE
    try:
        features = np.load(features_path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DamagedEntry(f"{FEATURES_FILE} is missing") from None
    except (OSError, ValueError, EOFError) as error:
        raise DamagedEntry(f"{FEATURES_FILE} cannot be read ({_short(error)})") from None
    if features.shape != (count, dim):
        raise DamagedEntry(f"{FEATURES_FILE} has shape {features.shape}, {META_FILE} says {(count, dim)}")
    if features.dtype != dtype:
        raise DamagedEntry(f"{FEATURES_FILE} holds {features.dtype}, {META_FILE} says {dtype}")
    expected_size = getattr(features, "offset", 0) + features.nbytes
    if features_path.stat().st_size != expected_size:  # memmap ignores bytes beyond the array
        raise DamagedEntry(f"{FEATURES_FILE} is {features_path.stat().st_size:,} bytes, not {expected_size:,}")
    try:
        labels = np.load(folder / LABELS_FILE, allow_pickle=False)
    except FileNotFoundError:
        raise DamagedEntry(f"{LABELS_FILE} is missing") from None
    except (OSError, ValueError, EOFError) as error:
        raise DamagedEntry(f"{LABELS_FILE} cannot be read ({_short(error)})") from None
    if labels.shape != (count,) or labels.dtype.kind not in "iu":
        raise DamagedEntry(f"{LABELS_FILE} holds {labels.shape} {labels.dtype}, not {count} integer labels")
    recorded = meta.get("features_crc32")
    if checksum is None:
        checksum = features.nbytes <= CHECKSUM_ON_READ_BYTES
    if checksum and recorded is not None and _crc32(features) != recorded:
        raise DamagedEntry(f"{FEATURES_FILE} does not match its checksum")
    return FeatureSet(features=features, labels=labels, meta=meta, path=folder)


def _crc32(array: np.ndarray) -> str:
    flat = array.reshape(-1).view(np.uint8)
    crc, step = 0, 64 * 2**20  # in slices: a memory map pages in a slice at a time
    for start in range(0, flat.size, step):
        crc = zlib.crc32(flat[start : start + step].data, crc)
    return f"{crc:08x}"


# Writing an entry


def _write_entry(folder: Path, key: str | None, *, count: int, dim: int, labels: np.ndarray, describe: dict,
                 fill: Fill, cache_root: Path, hint: str | None = None, start: int = 0,
                 resumable: bool = False) -> None:
    """Write features (through `fill`, from row `start`: the rows before are in the features file
    already), labels and meta.json into `folder`, all synced to disk. `resumable`: record in
    progress.json how many rows are durable, as `fill` reports them written.

    A full disk or quota, when the space is reserved or later, raises a GraftError naming
    `cache_root` (with `hint` on where else to put the cache)."""
    try:
        path = folder / FEATURES_FILE
        features = _open_memmap(path, (count, dim)) if start else _reserve_memmap(path, (count, dim))
        recorded = time.monotonic()

        def written(rows: int) -> None:
            nonlocal recorded
            if not resumable or rows >= count or time.monotonic() - recorded < PROGRESS_EVERY_S:
                return  # all rows done: the entry is about to be complete anyway
            features.flush()  # the rows first, on disk for sure; only then the count that says so
            fsync_path(path)
            write_json_atomic(folder / PROGRESS_FILE, {"rows": rows, "count": count, "dim": dim})
            recorded = time.monotonic()

        fill(features, start, written)
        features.flush()
        crc = _crc32(features)
        fsync_path(folder / FEATURES_FILE)
        _save_synced(folder / LABELS_FILE, lambda handle: np.save(handle, labels))
        meta = {"key": key, "count": count, "dim": dim, "dtype": FEATURES_DTYPE.name, "features_crc32": crc,
                "created": time.time(), **describe}
        if key is None:
            del meta["key"]
        text = json.dumps(meta, indent=1, default=str).encode()
        _save_synced(folder / META_FILE, lambda handle: handle.write(text))  # last: it marks the entry complete
        fsync_path(folder)
    except OSError as error:
        if error.errno in _DISK_FULL:
            raise _disk_full(cache_root, _entry_bytes(count, dim), error, hint=hint) from error
        raise


def _reserve_memmap(path: Path, shape: tuple[int, int]) -> np.memmap:
    """A new .npy of `shape`, its space allocated on disk before it is memory-mapped.

    A plain memmap makes a sparse file: when the disk fills up while rows are written through it,
    the kernel can only kill the process (SIGBUS). posix_fallocate claims every block first, so a
    full disk is an OSError (ENOSPC) here instead."""
    header = {"descr": np.lib.format.dtype_to_descr(FEATURES_DTYPE), "fortran_order": False, "shape": shape}
    with open(path, "xb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        offset = handle.tell()
        size = offset + shape[0] * shape[1] * FEATURES_DTYPE.itemsize
        handle.flush()
        _allocate(handle.fileno(), size, path.parent)
        handle.truncate(size)  # where the space could not be reserved, at least the right length
    return np.memmap(path, dtype=FEATURES_DTYPE, mode="r+", shape=shape, offset=offset)


def _open_memmap(path: Path, shape: tuple[int, int]) -> np.memmap:
    """The features file of a build being resumed, checked by `_resumable_rows`, to write on into."""
    features = np.load(path, mmap_mode="r+", allow_pickle=False)
    if features.shape != shape or features.dtype != FEATURES_DTYPE:  # changed since it was checked
        raise OSError(errno.EIO, f"{FEATURES_FILE} changed while graft resumed it", str(path))
    return features


def _allocate(descriptor: int, size: int, folder: Path) -> None:
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is not None:
        try:
            allocate(descriptor, 0, size)
            return
        except OSError as error:
            if error.errno not in (errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
                raise
    # No fallocate here (macOS, Windows, some network file systems): check the free space instead.
    if shutil.disk_usage(folder).free < size:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))


def _save_synced(path: Path, write: Callable) -> None:
    with open(path, "xb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def _build_in_temporary(key: str, *, count: int, dim: int, labels: np.ndarray, describe: dict,
                        fill: Fill) -> FeatureSet:
    """Features for a cache that cannot be written: built in a temporary folder, which is removed
    as soon as they are mapped (POSIX keeps a mapped file's data until it is unmapped), so nothing
    is left behind even if the process is killed. Not an entry: no key, no derived results."""
    try:
        folder = Path(tempfile.mkdtemp(prefix=f"graft-features-{key[:8]}-"))
    except OSError as error:
        raise GraftError(f"The feature cache is not writable, and neither is the temporary folder "
                         f"{tempfile.gettempdir()} ({error.strerror or error}). Point GRAFT_CACHE (or --cache-dir) "
                         "at a writable folder.") from error
    try:
        _write_entry(folder, None, count=count, dim=dim, labels=labels, describe=describe, fill=fill,
                     cache_root=folder.parent, hint="set TMPDIR to a folder with room, or make the feature cache "
                     "writable (GRAFT_CACHE or --cache-dir)")
        built = _open_entry(folder, checksum=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return built


def _entry_bytes(count: int, dim: int) -> int:
    return count * dim * FEATURES_DTYPE.itemsize + count * 8 + 4096  # features, labels, headers and meta


def _disk_full(folder: Path, needed: int, error: OSError, *, hint: str | None = None) -> GraftError:
    what = "disk is full" if error.errno == errno.ENOSPC else "disk quota is used up"
    hint = hint or ("free some space there (`graft cache rm` removes old features), or point the cache at a "
                    "disk with room: set GRAFT_CACHE=/path/with/room, or pass --cache-dir")
    return GraftError(f"No room for the features in {folder}: they need {format_bytes(needed)} and the {what} "
                      f"({error.strerror or error}). To fix: {hint}.")


# Partial builds


def _partial_info(folder: Path) -> PartialBuild:
    owner = _read_json_quietly(folder / OWNER_FILE)
    pid = owner.get("pid") if isinstance(owner.get("pid"), int) else None
    released = owner.get("released") is True
    alive = _pid_alive(pid) if pid is not None and owner.get("host") == socket.gethostname() else None
    if released:
        alive = False  # its process may still run, but no longer builds it
    times = [_mtime(folder), *(_mtime(path) for path in _children(folder))]
    last_write = max(times)
    started = owner["started"] if isinstance(owner.get("started"), (int, float)) else _mtime(folder)
    key = folder.name[len(PARTIAL_PREFIX):].rsplit("-", 1)[0]
    return PartialBuild(name=folder.name, path=folder, key=key, size_bytes=_size(folder), started=started,
                        last_write=last_write, pid=pid, alive=alive, released=released)


def _write_owner(folder: Path) -> None:
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    write_json_atomic(folder / OWNER_FILE, owner)


def _release(folder: Path) -> None:
    """Mark a partial build its builder stopped (an error, Ctrl-C) as free to resume, even by this
    same process; where that cannot be written, its pid or age frees it later."""
    owner = _read_json_quietly(folder / OWNER_FILE)
    with contextlib.suppress(OSError):
        write_json_atomic(folder / OWNER_FILE, {**owner, "released": True})


def _resumable_rows(folder: Path, *, count: int, dim: int) -> int:
    """How many rows of a partial build taken over are on disk and can be kept: the count recorded
    in progress.json, where the features file is the one this build would write (its header,
    shape, type and length). Otherwise 0, and the folder is emptied to start over."""
    progress = _read_json_quietly(folder / PROGRESS_FILE)
    rows = _int_or_zero(progress.get("rows"))
    if 0 < rows <= count and (progress.get("count"), progress.get("dim")) == (count, dim):
        try:
            features = np.load(folder / FEATURES_FILE, mmap_mode="r", allow_pickle=False)
            size = (folder / FEATURES_FILE).stat().st_size
        except (OSError, ValueError, EOFError):
            pass
        else:
            if (features.shape == (count, dim) and features.dtype == FEATURES_DTYPE and not np.isfortran(features)
                    and size == getattr(features, "offset", 0) + features.nbytes):
                del features
                _empty(folder, keep={OWNER_FILE, FEATURES_FILE, PROGRESS_FILE})
                return rows
    _empty(folder, keep={OWNER_FILE})
    return 0


def _empty(folder: Path, *, keep: set[str]) -> None:
    """Remove what is in `folder` but the names in `keep` (a build that died left labels, meta or
    temporary files behind; they are written again)."""
    for path in _children(folder):
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _try_lock(folder: Path) -> int | bool | None:
    """An exclusive flock on `folder`, without waiting: its descriptor, False where another process
    (or another descriptor) holds it, None where locks are not available (then the pid decides).
    The lock lives as long as the descriptor: a killed builder's lock is gone with it."""
    if fcntl is None:
        return None
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(descriptor)
        return False if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) else None
    _held_locks.add(descriptor)
    return descriptor


def _unlock(lock: int | bool | None) -> None:
    if isinstance(lock, int) and not isinstance(lock, bool):
        _held_locks.discard(lock)
        with contextlib.suppress(OSError):
            os.close(lock)  # closing the descriptor releases the flock


# A forked child (a DataLoader worker) shares the builder's locks; it closes its copies, so the
# lock goes with the builder, not with workers that outlive it for a moment.
_held_locks: set[int] = set()


def _forget_locks() -> None:
    for descriptor in _held_locks:
        with contextlib.suppress(OSError):
            os.close(descriptor)
    _held_locks.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks)


def _pid_alive(pid: int) -> bool | None:
    if os.name != "posix":
        return None  # os.kill(pid, 0) would end the process on Windows
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return None
    return True


# Small helpers


def format_bytes(size: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def format_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def _warn_unwritable(root: Path, error: OSError) -> None:
    if str(root) in _warned_unwritable:
        return
    _warned_unwritable.add(str(root))
    _warn(f"the feature cache {root} is not writable ({error.strerror or error}); features are computed in a "
          "temporary folder and not kept for the next run. To keep them, make that folder writable, or set "
          "GRAFT_CACHE (or --cache-dir) to a writable folder.")


def _is_hidden(folder: Path) -> bool:
    return folder.name.startswith(".")


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _int_or_zero(value) -> int:
    return value if _is_count(value) else 0


def _short(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _read_json_quietly(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _read_meta_quietly(folder: Path) -> dict:
    return _read_json_quietly(folder / META_FILE)


def _children(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _size(folder: Path) -> int:
    total = 0
    for path in _children(folder):
        try:
            total += path.stat().st_size
        except OSError:
            pass
    return total


def load_derived(features: FeatureSet, name: str, parts: dict) -> dict[str, np.ndarray] | None:
    """Arrays computed earlier from `features` (a logistic-regression fit, the audit's out-of-fold
    probabilities) with the settings `parts`, or None. They live inside the features' cache entry,
    so `graft cache rm` removes them together, and new features never meet old results. Features
    that are not a cache entry (made by hand, without a key) never have any."""
    from safetensors.numpy import load_file

    if not features.meta.get("key"):
        return None
    path = _derived_path(features, name, parts)
    return load_file(str(path)) if path.exists() else None


def store_derived(features: FeatureSet, name: str, parts: dict, arrays: dict[str, np.ndarray]) -> None:
    """Store what `load_derived` reads, atomically (`graft.io`), so a crash never leaves half a
    result; a read-only cache just does not keep it."""
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    if not features.meta.get("key"):
        return
    try:
        with atomic_path(_derived_path(features, name, parts)) as temporary:
            save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}, str(temporary))
    except (OSError, SafetensorError):  # safetensors reports a failed write as its own error
        pass  # a read-only cache: the result is computed again next time


def _derived_path(features: FeatureSet, name: str, parts: dict) -> Path:
    return features.path / f"{name}-{cache_key(parts)[:16]}.safetensors"
