"""The identity of a list of image files, as the caches key it: `files_fingerprint`, made of each
file's `file_identity`.

It is the key material of the feature cache (graft.features, with the labels) and of the
readability memo (graft.data.discover, with the decode size). A module of its own, importing
nothing of graft, so that finding data never imports the features package (and torch with it).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

# (absolute path, size, st_mtime_ns, st_ino, st_ctime_ns): see files_fingerprint
FileIdentity = tuple[str, int, int, int, int]


def file_identity(path) -> FileIdentity:
    """What identifies one file's bytes without reading them: its absolute path, size, modification
    time, inode number and change time, from one `stat` call (files_fingerprint says what this
    covers and what it misses). Raises OSError when the file is missing."""
    stat = os.stat(path)
    return os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns


def identity_digest(identity: FileIdentity) -> bytes:
    """A 16-byte digest of one `file_identity`, without any label: the feature cache records one per
    row, so a later list of files reuses the rows of the files that did not change."""
    return hashlib.blake2b("|".join(map(str, identity)).encode(), digest_size=16).digest()


def content_digest(path) -> bytes:
    """A 16-byte digest (BLAKE2b) of the bytes of the file at `path`: the feature cache records one
    per row, so a copy of an image already extracted (a new path, inode and times: another
    `file_identity`) reuses its row. Read only for files no row matches by identity. Raises OSError
    when the file cannot be read."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, lambda: hashlib.blake2b(digest_size=16)).digest()


def files_fingerprint(paths, labels, identities: Iterable[FileIdentity] | None = None) -> str:
    """A hash that changes whenever a file's bytes may have changed: the key of the feature cache
    and of the readability memo (a key that misses a change reuses stale features, silently).

    Covered, per file: its absolute path, its label (or, for the memo, the decode size), its size,
    its modification time (`st_mtime_ns`), its inode number (`st_ino`) and its change time
    (`st_ctime_ns`). The change time is set by the kernel on every write, rename, `os.utime` or
    chmod and cannot be set back by a user, so an edit, a swap of two equal-size files between
    classes (`mv`, with times restored), an in-place rewrite with its mtime restored, an addition,
    a removal or a relabel all change the key. The order of the files counts too.

    Not covered: the bytes themselves. A change that leaves size, mtime, inode and ctime as they
    were takes a rewrite in place, to the same size, within the same timestamp tick as the file's
    previous change (a few milliseconds, on file systems with coarse timestamps), or a write to
    the raw disk: nothing a user does by hand. Hashing the contents instead would read every byte of
    every image (gigabytes for a folder of photos, from disk) before any feature is computed; inode
    and ctime come from the same `stat` call as size and mtime.

    Harmless misses: `touch`, chmod, a restore from backup or a copy (`cp -a`, `rsync -a`) change
    the key though the pixels are the same, and so does a remount on file systems that invent
    inode numbers (some FUSE and network mounts): the key is then new, never reused wrongly, and
    the feature cache takes such a file's row back by its bytes (`content_digest`,
    graft.features.reuse) instead of computing it again. Raises OSError when a file is missing.

    `identities`: the files' `file_identity`, where the caller has them already (one `stat` a file).
    """
    digest = hashlib.sha256()
    for (path, size, mtime, inode, ctime), label in zip(
            map(file_identity, paths) if identities is None else identities, labels):
        digest.update(f"{path}|{label}|{size}|{mtime}|{inode}|{ctime}\n".encode())
    return digest.hexdigest()
