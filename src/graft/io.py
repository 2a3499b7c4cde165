"""Writing files so that a crash never leaves half of one, and run folders that never collide.

Every file graft writes goes through `atomic_path`: the bytes land in a temporary file with a
unique name beside the target (two writers never share one), are flushed to disk, and only then
renamed over the target, in one step. A reader sees the old file or the new one, never a mix; an
interrupted write leaves no temporary file behind, and a write the system refuses (disk full, a
file-size limit, no permission) is an OSError naming the target, never the temporary name.

An output the user names (`graft predict --csv`, `graft export --out`, ...) is checked first by
`refuse_overwrite`: a file already there is never replaced unless `--overwrite` says so.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (its folder made where missing); on success it is synced
    and renamed to `path`.

    The temporary name keeps the target's suffix (libraries such as matplotlib pick the format
    from it). On any error, the temporary file is removed and the error propagates; an error of the
    system's (an OSError, or a library's error that carries one, such as safetensors' "File too
    large (os error 27)") becomes an OSError naming `path`, never the temporary name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield temporary
        if temporary.exists():  # the mode a new file gets, whichever library wrote it (safetensors: 0600)
            os.chmod(temporary, 0o666 & ~_umask())
        fsync_path(temporary)
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        named = _named_os_error(error, path, temporary)
        if named is None:
            raise
        raise named from error


# Rust's std::io::Error, as safetensors and other compiled writers print it: "... (os error 27)".
_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)")


def _named_os_error(error: BaseException, path: Path, temporary: Path) -> OSError | None:
    """`error` as an OSError about `path` where it is one about the temporary file (or about no file),
    or a library's error carrying an OS error number; None for any other error (raised as it is)."""
    if isinstance(error, OSError):
        if error.errno is None or error.filename not in (None, str(temporary), temporary):
            return None  # about another file: its own name is the right one
        return OSError(error.errno, error.strerror or os.strerror(error.errno), str(path))  # its subclass, by errno
    if not isinstance(error, Exception):
        return None  # KeyboardInterrupt, SystemExit
    found = _OS_ERROR_IN_TEXT.search(str(error))
    if found is None:
        return None
    number = int(found.group(1))
    return OSError(number, os.strerror(number), str(path))


def refuse_overwrite(paths, *, flag: str, overwrite: bool = False) -> None:
    """Refuse to write over a file the user has: an output the user named with `flag` (`--csv`,
    `--out`, `-o`) at any of `paths` (the file and whatever graft writes beside it) that exists
    already is a GraftError naming the file and `--overwrite`, unless `overwrite`. A folder where a
    file is to go is refused either way. Call it before any work, where the names are known."""
    from .errors import GraftError

    for path in map(Path, paths):
        if path.is_dir():
            raise GraftError(f"{flag} {path}: that is a folder; give the name of a file to write.")
        if not overwrite and (path.exists() or path.is_symlink()):
            raise GraftError(f"{flag}: {path} exists already, and graft does not replace a file it was not asked "
                             "to. Choose another name, or add --overwrite to replace it.")


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


RUN_MARKER = ".graft-run"  # in every run (and compare) folder: never read back as training data
OUTPUT_MARKER = ".graft-output"  # in an output folder graft created (runs/): the same


def new_run_dir(out: str | Path, name: str) -> Path:
    """`out/name`, or `out/name-2`, `-3`, ... : a new folder no other run is using, created now.

    `mkdir` without exist_ok is the claim: two processes asking for the same name at once each get
    their own folder. The folder is marked (RUN_MARKER) so that graft never reads it as data, even
    when `out` lies inside the data folder; an `out` folder graft creates is marked too.
    """
    out = Path(out)
    if not out.exists():
        out.mkdir(parents=True, exist_ok=True)
        _touch(out / OUTPUT_MARKER)
    base = out / name
    candidate, index = base, 2
    while True:
        try:
            candidate.mkdir()
            break
        except FileExistsError:
            candidate, index = base.with_name(f"{base.name}-{index}"), index + 1
    _touch(candidate / RUN_MARKER)
    return candidate


def check_output_folder(out: str | Path) -> None:
    """Fail now, before any work, when run folders cannot be made in `out` (a file, or not writable)."""
    from .errors import GraftError

    out = Path(out)
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise GraftError(f"--out {out}: {existing} is a file, not a folder; choose another --out.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GraftError(f"--out {out}: graft may not write in {existing}; choose a folder you can write to.")


def _touch(path: Path) -> None:
    try:
        path.touch(exist_ok=True)
    except OSError:  # a marker is a courtesy: an output folder we cannot write to fails later, clearly
        pass


@functools.cache
def _umask() -> int:
    """This process's umask (read without changing it where /proc shows it)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _finite(value):
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def fsync_path(path: str | Path) -> None:
    """Flush a file's bytes, or a folder's entries (a rename in it), to disk, where the system can."""
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


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read a block at a time (hashlib.file_digest)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def process_folder(prefix: str) -> Path:
    """A new temporary folder that lasts as long as this process: removed when it exits (for files
    an engine may open again, such as a graph traced where the cache cannot be written)."""
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
