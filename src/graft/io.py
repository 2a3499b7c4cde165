"""Writing files so that a crash never leaves half of one, and run folders that never collide.

Every file graft writes goes through `atomic_path`: the bytes land in a temporary file with a
unique name beside the target (two writers never share one), are flushed to disk, and only then
renamed over the target, in one step. A reader sees the old file or the new one, never a mix; an
interrupted write leaves no temporary file behind.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is synced and renamed to `path`.

    The temporary name keeps the target's suffix (libraries such as matplotlib pick the format
    from it). On any error, the temporary file is removed and the error propagates.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    with atomic_path(path) as temporary:
        # "x": a new file with the user's usual permissions (umask), never someone else's file
        with temporary.open("xb") as handle:
            handle.write(data)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data) -> Path:
    """JSON, indented, strict: a NaN or infinity is written as null, never as bare `NaN`."""
    return write_text_atomic(path, json.dumps(_finite(data), indent=2, default=str, ensure_ascii=False) + "\n")


def new_run_dir(out: str | Path, name: str) -> Path:
    """`out/name`, or `out/name-2`, `-3`, ... : a folder no other run is using, created now.

    `mkdir` without exist_ok is the claim: two processes asking for the same name at once each get
    their own folder.
    """
    base = Path(out) / name
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, index = base, 2
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            if candidate.is_dir() and not any(candidate.iterdir()):
                return candidate  # an empty folder (made by hand, or by `--out`) is free to use
            candidate, index = base.with_name(f"{base.name}-{index}"), index + 1


def _finite(value):
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _fsync(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
