"""The feature cache: reused when nothing changed, rebuilt when something did, never half-written."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from graft.backbones import create_backbone
from graft.data.discover import find_data
from graft.data.transforms import Augment
from graft.errors import GraftError
from graft.features import FeatureCache, backbone_features
from graft.features import extract as extract_module
from graft.runtime import Runtime

# torch, not ONNX Runtime: these tests are about the cache, and torch needs no graph traced into each
# test's own cache folder (tests/test_engines.py caches ONNX Runtime's features)
QUIET = Runtime.resolve(workers=0, progress=False, engine="torch")


@pytest.fixture()
def setup(tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    backbone = create_backbone("tf_efficientnet_lite0", img_size=48)
    return backbone, find_data(data), FeatureCache(tmp_path / "cache")


def _count_extractions(monkeypatch):
    calls = []
    real = extract_module.extract_into

    def counting(*args, **kwargs):
        calls.append(kwargs.get("description"))
        return real(*args, **kwargs)

    monkeypatch.setattr(extract_module, "extract_into", counting)
    return calls


def test_second_request_reuses_the_features(setup, monkeypatch):
    backbone, splits, cache = setup
    calls = _count_extractions(monkeypatch)
    first = backbone_features(backbone, splits.train, split="train", cache=cache, runtime=QUIET)
    second = backbone_features(backbone, splits.train, split="train", cache=cache, runtime=QUIET)
    assert len(calls) == 1
    assert first.path == second.path and first.features.dtype == np.float16
    assert first.features.shape == (len(splits.train), backbone.num_features)
    assert np.abs(np.asarray(first.features, dtype=np.float32)).sum() > 0


def test_features_match_the_backbone(setup):
    import torch

    from graft.data.images import load_image
    from graft.data.transforms import eval_transform

    backbone, splits, cache = setup
    image = eval_transform(backbone.data_config)(load_image(splits.val[0].path))
    with torch.inference_mode():
        expected = backbone.eval()(image[None])[0].numpy()
    # fp32: the cached row is the backbone's output, up to float16 storage.
    exact = backbone_features(backbone, splits.val, split="val", cache=cache, runtime=QUIET.but(precision="32"))
    np.testing.assert_allclose(np.asarray(exact.features[0], dtype=np.float32), expected, rtol=1e-2, atol=1e-2)
    # bf16 (emulated where the CPU lacks it) rounds every layer: the same direction, not the same digits.
    fast = backbone_features(backbone, splits.val, split="val", cache=cache,
                             runtime=QUIET.but(precision="bf16", inference_precision="bf16"))
    row = np.asarray(fast.features[0], dtype=np.float32)
    assert fast.path != exact.path  # the precision is part of the key
    assert row @ expected / (np.linalg.norm(row) * np.linalg.norm(expected)) > 0.99


def test_changes_invalidate_exactly_what_they_must(setup, monkeypatch):
    backbone, splits, cache = setup
    calls = _count_extractions(monkeypatch)
    request = dict(split="train", cache=cache, runtime=QUIET)
    base = backbone_features(backbone, splits.train, **request)
    view0 = backbone_features(backbone, splits.train, view=0, augment=Augment(), **request)
    view1 = backbone_features(backbone, splits.train, view=1, augment=Augment(), **request)
    assert len({base.path, view0.path, view1.path}) == 3 and len(calls) == 3
    assert not np.array_equal(np.asarray(view0.features), np.asarray(view1.features))
    backbone_features(backbone, splits.train, view=1, augment=Augment(), **request)  # same view again
    assert len(calls) == 3
    touched = splits.train[0].path  # a touched file changes the key; its bytes did not change: its row is reused
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    assert backbone_features(backbone, splits.train, **request).path != base.path and len(calls) == 3
    other_size = create_backbone("tf_efficientnet_lite0", img_size=64)  # new preprocessing, new key
    assert backbone_features(other_size, splits.train, **request).path != base.path and len(calls) == 4
    cut = create_backbone("tf_efficientnet_lite0", img_size=48, cut=2)
    assert backbone_features(cut, splits.train, **request).features.shape[1] == 40 and len(calls) == 5


def test_interrupted_extraction_leaves_no_entry(setup, monkeypatch):
    backbone, splits, cache = setup

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(extract_module, "extract_into", crash)
    with pytest.raises(KeyboardInterrupt):
        backbone_features(backbone, splits.train, split="train", cache=cache, runtime=QUIET)
    assert cache.entries() == [] and not any(cache.root.iterdir())
    monkeypatch.undo()
    features = backbone_features(backbone, splits.train, split="train", cache=cache, runtime=QUIET)
    assert len(features) == len(splits.train) and len(cache.entries()) == 1


def test_cache_listing_and_removal(setup):
    backbone, splits, cache = setup
    backbone_features(backbone, splits.val, split="val", cache=cache, runtime=QUIET)
    (entry,) = cache.entries()
    assert entry.count == len(splits.val) and entry.dim == backbone.num_features and entry.size_bytes > 0
    assert "val" in entry.description
    assert cache.remove().entries == 1 and cache.entries() == []


# --- Reliability: hostile conditions give a clear message, never a traceback, silent damage or debris ---

KEY, OTHER = "a" * 24, "b" * 24


def _entry(cache, key=KEY, *, count=5, dim=4, value=1.0):
    """A small entry made without a backbone: every feature `value`, labels 0, 1, 0, ..."""
    def fill(out, start, written):
        out[start:] = value

    return cache.build(key, count=count, dim=dim, labels=np.arange(count) % 2,
                       describe={"backbone": "test", "split": "val", "view": "plain"}, fill=fill)


def _run_main(args, capsys, monkeypatch):
    """`graft ARGS` through main(), as the console script runs it: (exit code, all output)."""
    from graft.cli.main import main

    monkeypatch.setattr("sys.argv", ["graft", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exit_info:
        code = exit_info.code or 0
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture()
def cli_cache(tmp_path, monkeypatch):
    """The cache the `graft cache` commands see: $GRAFT_CACHE/features."""
    monkeypatch.setenv("GRAFT_CACHE", str(tmp_path / "graft-cache"))
    return FeatureCache(tmp_path / "graft-cache" / "features")


def _partials(cache):
    return sorted(p.name for p in cache.root.glob(".partial-*"))


# 1. A full disk: space is reserved before the memory map is written, so no SIGBUS mid-extraction.

@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_full_disk_is_a_clear_error_and_leaves_no_debris(tmp_path, monkeypatch, code):
    cache = FeatureCache(tmp_path / "cache")
    reserved = []

    def full(descriptor, offset, length):
        reserved.append(length)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(GraftError) as error:
        _entry(cache, count=1000, dim=1000)
    message = str(error.value)
    assert str(cache.root) in message and "GRAFT_CACHE" in message and "--cache-dir" in message
    assert "2.0 MB" in message  # 1000 x 1000 float16
    assert reserved and reserved[0] >= 2_000_000
    assert _partials(cache) == [] and cache.entries() == []


def test_space_is_reserved_before_the_features_are_written(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    seen = []

    def fill(out, start, written):
        seen.append(os.stat(out.filename).st_blocks * 512)  # allocated, not a sparse promise
        out[:] = 1

    cache.build(KEY, count=2000, dim=512, labels=np.zeros(2000), describe={}, fill=fill)
    assert seen[0] >= 2000 * 512 * 2


# 2. A damaged entry: found when read, reported, removed and rebuilt; `cache ls` and `cache verify` show it.

def _truncate(folder):
    path = folder / "features.npy"
    path.write_bytes(path.read_bytes()[:-7])


def _flip_a_byte(folder):
    path = folder / "features.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))


def _bad_meta(folder):
    (folder / "meta.json").write_text('{"count": 5, "dim"')


def _no_meta(folder):
    (folder / "meta.json").unlink()


def _no_labels(folder):
    (folder / "labels.npy").unlink()


def _short_labels(folder):
    np.save(folder / "labels.npy", np.zeros(3, dtype=np.int64))


def _other_shape(folder):
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "dim": 8}))


def _other_dtype(folder):
    np.save(folder / "features.npy", np.ones((5, 4), dtype=np.float32))


DAMAGE = {"truncated features": (_truncate, "features.npy"), "changed bytes": (_flip_a_byte, "checksum"),
          "invalid meta": (_bad_meta, "meta.json"), "no meta": (_no_meta, "meta.json"),
          "no labels": (_no_labels, "labels.npy"), "short labels": (_short_labels, "labels.npy"),
          "other shape": (_other_shape, "shape"), "other dtype": (_other_dtype, "float32")}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_entry_is_reported_removed_and_rebuilt(tmp_path, capsys, damage):
    cache = FeatureCache(tmp_path / "cache")
    folder = _entry(cache).path
    spoil, reason = DAMAGE[damage]
    spoil(folder)
    assert cache.get(KEY) is None
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and str(folder) in warning and "damaged" in warning and reason in warning
    assert not folder.exists() and _partials(cache) == []
    rebuilt = _entry(cache, value=2.0)
    assert rebuilt.path == folder and float(rebuilt.features[0, 0]) == 2.0
    assert cache.get(KEY) is not None and capsys.readouterr().err == ""


def test_a_truncated_entry_is_extracted_again(setup, monkeypatch, capsys):
    backbone, splits, cache = setup
    calls = _count_extractions(monkeypatch)
    first = backbone_features(backbone, splits.val, split="val", cache=cache, runtime=QUIET)
    expected = np.asarray(first.features).copy()
    _truncate(first.path)
    again = backbone_features(backbone, splits.val, split="val", cache=cache, runtime=QUIET)
    assert len(calls) == 2 and again.path == first.path
    np.testing.assert_array_equal(np.asarray(again.features), expected)
    assert "damaged" in capsys.readouterr().err


def test_cache_ls_marks_and_verify_removes_damaged_entries(cli_cache, capsys, monkeypatch):
    _entry(cli_cache, KEY)
    _entry(cli_cache, OTHER)
    _truncate(cli_cache.root / OTHER)
    code, listing = _run_main(["cache", "ls"], capsys, monkeypatch)
    assert code == 0 and "2 entries" in listing and "damaged" in listing
    assert [e.key for e in cli_cache.entries() if e.problem] == [OTHER]
    code, report = _run_main(["cache", "verify"], capsys, monkeypatch)
    assert code == 1 and OTHER in report and KEY not in report and "features.npy" in report and "--fix" in report
    assert (cli_cache.root / OTHER).exists()  # verify alone changes nothing
    code, report = _run_main(["cache", "verify", "--fix"], capsys, monkeypatch)
    assert code == 0 and "Removed 1" in report
    assert [e.key for e in cli_cache.entries()] == [KEY]
    code, report = _run_main(["cache", "verify"], capsys, monkeypatch)
    assert code == 0 and "1 entries" in report and "no damaged" in report.lower()


def test_verify_finds_changed_bytes_that_a_read_of_a_large_entry_does_not_check(tmp_path, monkeypatch):
    from graft.features import entry as cache_module

    cache = FeatureCache(tmp_path / "cache")
    folder = _entry(cache).path
    _flip_a_byte(folder)
    monkeypatch.setattr(cache_module, "CHECKSUM_ON_READ_BYTES", 0)  # as if the entry were large
    assert cache.get(KEY) is not None  # reading checks the structure only: cheap
    assert [e.problem for e in cache.verify()] == ["features.npy does not match its checksum"]


# 3. Partial builds: listed with their age; `cache rm` keeps those still being written; a lost race keeps theirs.

def _partial(cache, name, *, pid=None, idle_s=0.0):
    folder = cache.root / f".partial-{name}-0000abcd"
    folder.mkdir(parents=True)
    (folder / "features.npy").write_bytes(b"\0" * 1000)
    if pid is not None:
        import socket

        (folder / "owner.json").write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                                         "started": time.time() - idle_s}))
    if idle_s:
        for path in (*folder.iterdir(), folder):
            os.utime(path, (time.time() - idle_s, time.time() - idle_s))
    return folder


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_partial_builds_are_listed_and_only_abandoned_ones_removed(cli_cache, capsys, monkeypatch):
    _entry(cli_cache, KEY)
    building = _partial(cli_cache, "c" * 24, pid=os.getpid(), idle_s=120)  # this process: alive
    crashed = _partial(cli_cache, "d" * 24, pid=_dead_pid())
    forgotten = _partial(cli_cache, "e" * 24, idle_s=2 * 3600)  # an older graft's, untouched for 2 hours
    code, listing = _run_main(["cache", "ls"], capsys, monkeypatch)
    assert code == 0 and "1 entries" in listing and "3 partial" in listing
    for folder in (building, crashed, forgotten):
        assert folder.name in listing
    assert "2 min" in listing and "2.0 h" in listing and "abandoned" in listing
    code, report = _run_main(["cache", "rm"], capsys, monkeypatch)
    assert code == 0 and "Removed 1 cache entries" in report and "2 abandoned" in report
    assert "Kept 1" in report and building.name in report
    assert cli_cache.entries() == [] and _partials(cli_cache) == [building.name]


def test_cache_rm_removes_a_partial_build_that_stopped_writing_an_hour_ago(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    stuck = _partial(cache, "c" * 24, pid=os.getpid(), idle_s=2 * 3600)
    removal = cache.remove()
    assert removal.partials == 1 and removal.kept == [] and not stuck.exists()


def test_cache_rm_with_keys_removes_only_those(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    _entry(cache, KEY)
    _entry(cache, OTHER)
    building = _partial(cache, "c" * 24, pid=os.getpid())
    removal = cache.remove([OTHER, "f" * 24])
    assert removal.entries == 1 and removal.missing == ["f" * 24]
    assert [e.key for e in cache.entries()] == [KEY] and building.exists()


def test_build_keeps_an_entry_another_process_finished_first(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path / "cache")
    theirs = FeatureCache(tmp_path / "theirs")
    _entry(theirs, value=3.0)
    real_replace = os.replace

    def finish_theirs_first(source, target):
        if Path(target) == cache.root / KEY and not Path(target).exists():
            shutil.copytree(theirs.root / KEY, target)  # the other process renames its entry in first
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", finish_theirs_first)
    built = _entry(cache, value=1.0)
    assert built.path == cache.root / KEY and float(built.features[0, 0]) == 3.0
    assert _partials(cache) == [] and [e.key for e in cache.entries()] == [KEY]


def test_a_damaged_entry_in_the_way_is_replaced(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    (cache.root / KEY).mkdir(parents=True)  # a folder without meta.json: never a complete entry
    built = _entry(cache, value=4.0)
    assert float(built.features[0, 0]) == 4.0 and _partials(cache) == [] and not list(cache.root.glob(".*"))


# 4. A cache folder that cannot be written: features are still computed, with one warning line.

def _unwritable(kind, tmp_path, monkeypatch):
    if kind == "under a file":
        (tmp_path / "a-file").write_text("")
        return FeatureCache(tmp_path / "a-file" / "features")
    root = tmp_path / "read-only" / "features"
    root.mkdir(parents=True)
    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self == root or root in self.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    return FeatureCache(root)


@pytest.mark.parametrize("kind", ["under a file", "permission denied"])
def test_an_unwritable_cache_still_gives_features_with_one_warning(setup, tmp_path, monkeypatch, capsys, kind):
    import tempfile

    backbone, splits, writable = setup
    expected = np.asarray(backbone_features(backbone, splits.val, split="val", cache=writable, runtime=QUIET).features)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    cache = _unwritable(kind, tmp_path, monkeypatch)
    capsys.readouterr()
    first = backbone_features(backbone, splits.val, split="val", cache=cache, runtime=QUIET)
    again = backbone_features(backbone, splits.train, split="train", cache=cache, runtime=QUIET)
    np.testing.assert_array_equal(np.asarray(first.features), expected)
    assert len(again) == len(splits.train) and np.asarray(again.features).any()
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and "not writable" in warning and str(cache.root) in warning
    assert "GRAFT_CACHE" in warning
    assert not any((tmp_path / "tmp").iterdir())  # the temporary folder is gone already
    from graft.features.derived import load_derived, store_derived

    store_derived(first, "fit", {"C": 1}, {"w": np.ones(3)})  # nowhere to keep it: quietly not kept
    assert load_derived(first, "fit", {"C": 1}) is None


# 5. An interrupted extraction goes on from the batches it completed, bitwise the same features.

BATCHES_OF_8 = QUIET.but(batch_size=8)  # 36 training images: an interruption at image 16 keeps 2 batches


@pytest.fixture()
def reads(monkeypatch):
    """The indexes of the images read, in order; reading image `stop_at`, when set, is a Ctrl-C.
    Progress is recorded after every batch (not at most once a second), so the test is exact."""
    from graft.features import writing as cache_module

    monkeypatch.setattr(cache_module, "PROGRESS_EVERY_S", 0.0)
    log = ReadLog()
    real = extract_module.ViewDataset.__getitem__

    def getitem(self, index):
        if index == log.stop_at:
            log.stop_at = None
            raise KeyboardInterrupt
        log.append(index)
        return real(self, index)

    monkeypatch.setattr(extract_module.ViewDataset, "__getitem__", getitem)
    return log


class ReadLog(list):
    stop_at: int | None = None


def _interrupted(setup, reads, *, at=16):
    """Extract the training split, interrupted when image `at` is read; its partial build."""
    backbone, splits, cache = setup
    reads.stop_at = at
    with pytest.raises(KeyboardInterrupt):
        backbone_features(backbone, splits.train, split="train", cache=cache, runtime=BATCHES_OF_8)
    (partial,) = cache.partials()
    reads.clear()
    return partial


def _uninterrupted(setup, tmp_path):
    backbone, splits, _ = setup
    fresh = FeatureCache(tmp_path / "fresh")
    return np.asarray(backbone_features(backbone, splits.train, split="train", cache=fresh,
                                        runtime=BATCHES_OF_8).features)


def _set_owner(partial, pid):
    import socket

    (partial.path / "owner.json").write_text(json.dumps({"pid": pid, "host": socket.gethostname(),
                                                          "started": time.time()}))


@pytest.mark.parametrize("how", ["ctrl-c", "kill -9"])
def test_an_interrupted_extraction_goes_on_from_the_batches_it_completed(setup, reads, tmp_path, how):
    backbone, splits, cache = setup
    partial = _interrupted(setup, reads)
    assert partial.name == f".partial-{partial.key}" and partial.abandoned  # found by its key; free to take
    assert json.loads((partial.path / "progress.json").read_text())["rows"] == 16
    if how == "ctrl-c":
        assert partial.released and "interrupted" in partial.state  # this process gave it up
    else:
        _set_owner(partial, _dead_pid())  # a killed process: no chance to say so
    resumed = backbone_features(backbone, splits.train, split="train", cache=cache, runtime=BATCHES_OF_8)
    assert reads == list(range(16, len(splits.train)))  # only the rows not done, in order
    assert _partials(cache) == [] and [e.key for e in cache.entries()] == [resumed.meta["key"]]
    assert not {"owner.json", "progress.json"} & {path.name for path in resumed.path.iterdir()}
    assert np.array_equal(np.asarray(resumed.features), _uninterrupted(setup, tmp_path))
    assert cache.verify() == []  # its checksum covers the rows of both processes


@pytest.mark.parametrize("owner", ["running", "holds the lock"])
def test_a_partial_build_another_process_is_writing_is_left_alone(setup, reads, tmp_path, owner):
    import fcntl

    backbone, splits, cache = setup
    partial = _interrupted(setup, reads)
    lock = os.open(partial.path, os.O_RDONLY)
    if owner == "running":
        _set_owner(partial, os.getpid())  # this process: alive
    else:
        _set_owner(partial, _dead_pid())  # its pid says gone, but it is taking the folder over now
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        before = {path.name: path.read_bytes() for path in partial.path.iterdir()}
        features = backbone_features(backbone, splits.train, split="train", cache=cache, runtime=BATCHES_OF_8)
        assert reads == list(range(len(splits.train)))  # all of it, in a folder of its own
        assert {path.name: path.read_bytes() for path in partial.path.iterdir()} == before  # theirs untouched
        assert _partials(cache) == [partial.name] and len(cache.entries()) == 1
        assert np.array_equal(np.asarray(features.features), _uninterrupted(setup, tmp_path))
        assert [kept.name for kept in cache.remove().kept] == [partial.name]  # `cache rm` leaves it too
    finally:
        os.close(lock)


def _short(path):
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def _more_rows(path):
    path.write_text(json.dumps({**json.loads(path.read_text()), "rows": 999}))


def _other_shape(path):
    path.unlink()
    np.save(path, np.zeros((36, 7), dtype=np.float16))


@pytest.mark.parametrize("damage", [
    lambda folder: _short(folder / "features.npy"),
    lambda folder: _other_shape(folder / "features.npy"),
    lambda folder: (folder / "features.npy").write_bytes(b"not a numpy file"),
    lambda folder: (folder / "features.npy").unlink(),
    lambda folder: _more_rows(folder / "progress.json"),
    lambda folder: (folder / "progress.json").write_text("{"),
], ids=["short", "other shape", "not npy", "no features", "rows beyond the end", "bad progress"])
def test_a_partial_build_that_does_not_match_is_started_over(setup, reads, tmp_path, damage):
    backbone, splits, cache = setup
    partial = _interrupted(setup, reads)
    damage(partial.path)
    (partial.path / "labels.npy").write_bytes(b"left by a build that died before its rename")
    features = backbone_features(backbone, splits.train, split="train", cache=cache, runtime=BATCHES_OF_8)
    assert reads == list(range(len(splits.train)))
    assert _partials(cache) == [] and len(cache.entries()) == 1
    assert np.array_equal(np.asarray(features.features), _uninterrupted(setup, tmp_path))


def test_cache_rm_of_a_key_not_there_says_so_and_exits_1(cli_cache, capsys, monkeypatch):
    """`graft cache rm nosuchkey` exited 0 having removed nothing (issue 24), as `cache verify` did on damage."""
    _entry(cli_cache, KEY)
    code, report = _run_main(["cache", "rm", "nosuchkey"], capsys, monkeypatch)
    assert code == 1 and "Not in the cache" in report and "nosuchkey" in report and "Removed 0" in report
    assert [e.key for e in cli_cache.entries()] == [KEY]
    code, report = _run_main(["cache", "rm", KEY], capsys, monkeypatch)
    assert code == 0 and "Removed 1" in report
