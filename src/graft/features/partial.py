"""Partial builds of the feature cache: who builds an entry (claims, owners, locks), and how an
interrupted build is resumed.

An entry is built in `.partial-KEY`, which holds its builder's pid, host and start time in
owner.json; the builder holds an flock on the folder while it writes. As batches are written, the
rows are made durable (flush, fsync) and only then their number is recorded in progress.json
(graft.features.writing). The next build of the same key takes over a partial folder whose builder
is gone (its process ended on this host, it gave the folder up after an error, or it wrote nothing
for STALE_AFTER_S) and nobody holds locked, checks its features file, and computes only the rows
from the recorded count on; a damaged file is started over. A partial folder another process is
writing now is left alone: this build then uses a private one (`.partial-KEY-RANDOM`), as two
concurrent runs of the same extraction always did.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import write_json_atomic
from .entry import (
    FEATURES_DTYPE,
    FEATURES_FILE,
    OWNER_FILE,
    PARTIAL_PREFIX,
    PROGRESS_FILE,
    children,
    folder_size,
    int_or_zero,
    mtime,
    read_json_quietly,
)

try:
    import fcntl
except ImportError:  # Windows: no flock; a partial build is then judged by its owner's pid alone
    fcntl = None  # type: ignore[assignment]

# A partial build nobody has written to for this long is abandoned, whoever owns it: extraction
# writes rows every few seconds, so an hour without a write is a crashed or hung process.
STALE_AFTER_S = 3600.0

# A lock: a descriptor holding an flock; False where another process holds it; None without flock.
Lock = int | bool | None


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


def partial_info(folder: Path) -> PartialBuild:
    owner = read_json_quietly(folder / OWNER_FILE)
    pid = owner.get("pid") if isinstance(owner.get("pid"), int) else None
    released = owner.get("released") is True
    alive = _pid_alive(pid) if pid is not None and owner.get("host") == socket.gethostname() else None
    if released:
        alive = False  # its process may still run, but no longer builds it
    times = [mtime(folder), *(mtime(path) for path in children(folder))]
    last_write = max(times)
    started = owner["started"] if isinstance(owner.get("started"), (int, float)) else mtime(folder)
    key = folder.name[len(PARTIAL_PREFIX):].rsplit("-", 1)[0]
    return PartialBuild(name=folder.name, path=folder, key=key, size_bytes=folder_size(folder), started=started,
                        last_write=last_write, pid=pid, alive=alive, released=released)


def claim(root: Path, key: str, *, count: int, dim: int) -> tuple[Path, int, Lock]:
    """The partial folder to build `key` in (under the cache folder `root`), the first row still to
    compute, and the lock held on the folder (None where there is no flock).

    `.partial-KEY`: new, or taken over from a builder that is gone, with the rows it recorded
    (0 when its features file does not match). Where another process is building it now, a
    new private folder `.partial-KEY-RANDOM` that nobody resumes (its lock: False)."""
    root.mkdir(parents=True, exist_ok=True)
    shared = root / f"{PARTIAL_PREFIX}{key}"
    try:
        shared.mkdir()
    except FileExistsError:
        if shared.is_dir() and not shared.is_symlink() and partial_info(shared).abandoned:
            lock = try_lock(shared)
            if lock is not False:  # nobody else holds it: ours
                try:
                    _write_owner(shared)
                    return shared, _resumable_rows(shared, count=count, dim=dim), lock
                except BaseException:
                    unlock(lock)
                    raise
    else:
        lock = try_lock(shared)
        if lock is not False:  # False: another build took the new folder over before we locked it
            try:
                _write_owner(shared)
            except BaseException:
                unlock(lock)
                shutil.rmtree(shared, ignore_errors=True)
                raise
            return shared, 0, lock
    private = root / f"{PARTIAL_PREFIX}{key}-{uuid.uuid4().hex[:8]}"
    private.mkdir()
    try:
        _write_owner(private)
    except BaseException:
        shutil.rmtree(private, ignore_errors=True)
        raise
    return private, 0, False


def _write_owner(folder: Path) -> None:
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    write_json_atomic(folder / OWNER_FILE, owner)


def release(folder: Path) -> None:
    """Mark a partial build its builder stopped (an error, Ctrl-C) as free to resume, even by this
    same process; where that cannot be written, its pid or age frees it later."""
    owner = read_json_quietly(folder / OWNER_FILE)
    with contextlib.suppress(OSError):
        write_json_atomic(folder / OWNER_FILE, {**owner, "released": True})


def _resumable_rows(folder: Path, *, count: int, dim: int) -> int:
    """How many rows of a partial build taken over are on disk and can be kept: the count recorded
    in progress.json, where the features file is the one this build would write (its header,
    shape, type and length). Otherwise 0, and the folder is emptied to start over."""
    progress = read_json_quietly(folder / PROGRESS_FILE)
    rows = int_or_zero(progress.get("rows"))
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
    for path in children(folder):
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def try_lock(folder: Path) -> Lock:
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


def unlock(lock: Lock) -> None:
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


def format_age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"
