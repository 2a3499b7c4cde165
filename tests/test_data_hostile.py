"""Hostile inputs to data discovery (issue "Reliability"): graft's own output inside the data
folder, files changed behind the caches' back, folder links that loop or duplicate, empty files.

Every test also checks the user-facing rules: a `DataError` naming the place and the fix (never a
traceback), nothing silently wrong, and the user's files never modified."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from graft.data import discover
from graft.data.discover import OUTPUT_MARKER, RUN_MARKER, find_data, find_eval_data
from graft.data.images import load_image
from graft.errors import BadImageError, DataError
from graft.fingerprint import files_fingerprint


def build(root: Path, make_image, layout: dict[str, int]) -> Path:
    """`layout` maps "split/class" (or "class") to an image count."""
    for folder, count in layout.items():
        for index in range(count):
            make_image(root / folder / f"{index:02d}.png", size=(16, 16), seed=index)
    return root


def used(splits) -> list[Path]:
    return [s.path for s in splits.train + splits.val + splits.test]


def snapshot(root: Path) -> dict[Path, bytes]:
    """Every file below `root` (links not followed) and its bytes: proof that nothing was written."""
    return {path: path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file() and not path.is_symlink()}


def run_folder(folder: Path, make_image, *, marker: str | None = RUN_MARKER) -> Path:
    """A run folder as graft writes it: report PNGs (one in a subfolder), graft.json, a marker."""
    make_image(folder / "confusion_matrix.png", size=(32, 32))
    make_image(folder / "figures" / "mistakes.png", size=(32, 32), seed=1)
    (folder / "metrics.json").write_text("{}")
    if marker:
        (folder / marker).touch()
    return folder


# -- 1. graft's own output is never read as data ---------------------------------------------


def test_marker_names_are_the_convention():
    """One definition: graft writes the markers (graft.io) that discovery reads."""
    import graft.io

    assert RUN_MARKER == ".graft-run" and OUTPUT_MARKER == ".graft-output"
    assert (RUN_MARKER, OUTPUT_MARKER) == (graft.io.RUN_MARKER, graft.io.OUTPUT_MARKER)


def test_second_run_from_inside_the_data_folder_ignores_graft_output(tmp_path, make_image):
    """`cd DATA && graft train . ` twice: the first run wrote DATA/runs/<run>/*.png (default --out)."""
    data = build(tmp_path / "data", make_image, {"cat": 4, "dog": 4})
    (data / "runs").mkdir()
    (data / "runs" / OUTPUT_MARKER).touch()
    run_folder(data / "runs" / "linear-probe-20240101", make_image)
    run_folder(data / "runs" / "compare-20240101", make_image)
    before = snapshot(data)
    splits = find_data(data)
    assert splits.classes == ["cat", "dog"]
    assert len(used(splits)) == 8 and not any("runs" in path.parts for path in used(splits))
    assert splits.skipped == []
    summary = splits.describe()
    assert "ignored graft's own output: runs/" in summary
    assert summary.count("runs") == 1  # once, not once per run folder
    assert snapshot(data) == before


def test_run_folders_are_ignored_at_any_depth(tmp_path, make_image):
    """Run folders without an output root (--out DATA, --out DATA/cat/x) are never images of a class."""
    data = build(tmp_path / "data", make_image, {"cat": 4, "dog": 4})
    run_folder(data / "linear-probe-1", make_image)  # --out DATA: a run folder next to the classes
    run_folder(data / "cat" / "experiments" / "fine-tune-1", make_image)  # deep inside a class
    make_image(data / "cat" / "experiments" / "kept.png")  # the user's own image next to it: still used
    splits = find_data(data)
    assert splits.classes == ["cat", "dog"]
    assert splits.counts("train")["cat"] + splits.counts("val")["cat"] == 5
    assert not any(name in path.parts for path in used(splits) for name in ("linear-probe-1", "fine-tune-1"))
    summary = splits.describe()
    assert "linear-probe-1/" in summary and "cat/experiments/fine-tune-1/" in summary


def test_output_of_older_graft_versions_is_ignored(tmp_path, make_image):
    """No markers: a run is a folder with graft.json next to model.safetensors; a compare folder has
    compare.json next to compare.md; an output root holding only those is output too."""
    data = build(tmp_path / "data", make_image, {"cat": 4, "dog": 4})
    old_run = run_folder(data / "runs" / "linear-probe-1", make_image, marker=None)
    (old_run / "graft.json").write_text("{}")
    (old_run / "model.safetensors").write_bytes(b"\0" * 16)
    compare = data / "runs" / "compare-1"
    make_image(compare / "accuracy.png")
    (compare / "compare.json").write_text("{}")
    (compare / "compare.md").write_text("# compare")
    splits = find_data(data)
    assert splits.classes == ["cat", "dog"] and len(used(splits)) == 8 and splits.skipped == []
    assert "ignored graft's own output: runs/" in splits.describe()


def test_output_is_ignored_in_split_folders_and_for_evaluation(tmp_path, make_image):
    data = build(tmp_path / "data", make_image, {"train/cat": 3, "train/dog": 3, "val/cat": 1, "val/dog": 1})
    (data / "runs").mkdir()
    (data / "runs" / OUTPUT_MARKER).touch()
    run_folder(data / "runs" / "run-1", make_image)
    run_folder(data / "val" / "run-2", make_image)  # --out DATA/val
    splits = find_data(data)
    assert splits.classes == ["cat", "dog"] and len(used(splits)) == 8
    assert splits.skipped == []  # graft's output is not a problem for the user to fix
    assert "runs/" in splits.describe() and "val/run-2/" in splits.describe()
    samples, skipped = find_eval_data(data, ["cat", "dog"])
    assert len(samples) == 2 and skipped == []


def test_a_run_folder_given_as_data_is_refused(tmp_path, make_image):
    run = run_folder(tmp_path / "runs" / "linear-probe-1", make_image)
    build(run, make_image, {"a": 2, "b": 2})  # even if it happens to hold folders of images
    for folder in (run, tmp_path / "runs"):
        if folder.name == "runs":
            (folder / OUTPUT_MARKER).touch()
        with pytest.raises(DataError, match="graft's own output") as error:
            find_data(folder)
        assert str(folder) in str(error.value) and "class folders" in str(error.value)


# -- 2. The file fingerprint (feature cache key, readability memo) ----------------------------


def equal_size_pair(tmp_path: Path, make_image) -> tuple[Path, Path]:
    cat = make_image(tmp_path / "cat" / "1.bmp", size=(8, 8), color=(255, 0, 0))  # BMP: size from pixels only
    dog = make_image(tmp_path / "dog" / "1.bmp", size=(8, 8), color=(0, 0, 255))
    assert cat.stat().st_size == dog.stat().st_size and cat.read_bytes() != dog.read_bytes()
    return cat, dog


def restore_times(path: Path, stat: os.stat_result) -> None:
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_fingerprint_notices_files_swapped_with_times_restored(tmp_path, make_image):
    """Swapping two equal-size images between classes (mv) and setting their times back with
    os.utime left size, mtime and path unchanged: stale features were reused (val 100%, truly 0%)."""
    cat, dog = equal_size_pair(tmp_path, make_image)
    before = files_fingerprint([cat, dog], [0, 1])
    stats = cat.stat(), dog.stat()
    os.replace(cat, tmp_path / "swap")
    os.replace(dog, cat)
    os.replace(tmp_path / "swap", dog)
    restore_times(cat, stats[0])
    restore_times(dog, stats[1])
    assert (cat.stat().st_size, cat.stat().st_mtime_ns) == (stats[0].st_size, stats[0].st_mtime_ns)
    assert files_fingerprint([cat, dog], [0, 1]) != before


def test_fingerprint_notices_bytes_rewritten_in_place_with_times_restored(tmp_path, make_image):
    """Same inode, same size, mtime set back: only the change time (which no user can set) tells."""
    cat, dog = equal_size_pair(tmp_path, make_image)
    before = files_fingerprint([cat, dog], [0, 1])
    stat = cat.stat()
    time.sleep(0.05)  # kernels with coarse (per-tick) timestamps: let the clock move on
    cat.write_bytes(dog.read_bytes())
    restore_times(cat, stat)
    assert cat.stat().st_ino == stat.st_ino and cat.stat().st_mtime_ns == stat.st_mtime_ns
    assert files_fingerprint([cat, dog], [0, 1]) != before


def test_fingerprint_is_stable_for_unchanged_files_and_covers_paths_and_labels(tmp_path, make_image):
    cat, dog = equal_size_pair(tmp_path, make_image)
    key = files_fingerprint([cat, dog], [0, 1])
    load_image(cat), load_image(dog)  # reading is not changing
    assert files_fingerprint([cat, dog], [0, 1]) == key
    assert files_fingerprint([str(cat), str(dog)], [0, 1]) == key
    assert files_fingerprint([cat, dog], [1, 0]) != key
    assert files_fingerprint([dog, cat], [0, 1]) != key
    assert files_fingerprint([cat], [0]) != key


def test_readability_memo_notices_a_file_rewritten_with_times_restored(tmp_path, monkeypatch, make_image):
    data = build(tmp_path / "data", make_image, {"cat": 3, "dog": 3})
    decoded = []
    real = discover._read_problem
    monkeypatch.setattr(discover, "_read_problem", lambda path: decoded.append(path) or real(path))
    find_data(data)
    find_data(data)
    assert len(decoded) == 6  # the second run remembered the list as readable
    victim = data / "cat" / "01.png"
    stat = victim.stat()
    time.sleep(0.05)
    victim.write_bytes(b"\0" * stat.st_size)  # same size, now garbage
    restore_times(victim, stat)
    splits = find_data(data)
    assert len(decoded) == 12 and [s.path for s in splits.skipped] == [victim]


# -- 3. Folder links -------------------------------------------------------------------------


def test_link_to_the_data_folder_is_not_a_class(tmp_path, make_image):
    data = build(tmp_path / "data", make_image, {"cat": 3, "dog": 3})
    (data / "everything").symlink_to(".", target_is_directory=True)
    before = snapshot(data)
    splits = find_data(data)
    assert splits.classes == ["cat", "dog"] and len(used(splits)) == 6
    summary = splits.describe()
    assert "everything/" in summary and "ignored" in summary and "the data folder itself" in summary
    assert snapshot(data) == before and (data / "everything").is_symlink()


def test_links_to_an_ancestor_or_to_a_folder_already_read_are_ignored(tmp_path, make_image):
    data = build(tmp_path / "data", make_image, {"cat": 3, "dog": 3})
    (data / "kitty").symlink_to("cat", target_is_directory=True)  # sorts after cat/
    (data / "a-cats").symlink_to("cat", target_is_directory=True)  # sorts before cat/
    (data / "dog" / "up").symlink_to(tmp_path, target_is_directory=True)  # above the data folder
    (data / "dog" / "loop").symlink_to("..", target_is_directory=True)  # the data folder, from inside
    (data / "cat" / "self").symlink_to(".", target_is_directory=True)  # a loop
    splits = find_data(data)
    assert splits.classes == ["cat", "dog"] and len(used(splits)) == 6
    summary = splits.describe()
    for name in ("kitty/", "a-cats/", "dog/up/", "dog/loop/", "cat/self/"):
        assert name in summary
    samples, _ = find_eval_data(data, ["cat", "dog"])
    assert len(samples) == 6


def test_links_to_other_folders_are_followed(tmp_path, make_image):
    """A class (or part of one) kept on another disk is the usual reason for a link: still read."""
    elsewhere = build(tmp_path / "disk", make_image, {"cats": 3, "more-dogs": 2})
    data = build(tmp_path / "data", make_image, {"dog": 2})
    (data / "cat").symlink_to(elsewhere / "cats", target_is_directory=True)
    (data / "dog" / "more").symlink_to(elsewhere / "more-dogs", target_is_directory=True)
    splits = find_data(data)
    assert splits.counts("train")["cat"] + splits.counts("val")["cat"] == 3
    assert splits.counts("train")["dog"] + splits.counts("val")["dog"] == 4
    assert data / "dog" / "more" / "00.png" in used(splits)  # paths as the user sees them
    assert "ignored" not in splits.describe()


def test_same_file_under_two_classes_is_refused(tmp_path, make_image):
    data = build(tmp_path / "data", make_image, {"cat": 3, "dog": 3})
    (data / "dog" / "x.png").symlink_to(data / "cat" / "01.png")
    with pytest.raises(DataError, match="same image file more than once") as error:
        find_data(data)
    message = str(error.value)
    assert str(data / "cat" / "01.png") in message and str(data / "dog" / "x.png") in message


def test_same_file_twice_in_a_class_through_a_folder_link_is_refused(tmp_path, make_image):
    data = build(tmp_path / "data", make_image, {"cat": 3, "dog": 3})
    (data / "dog" / "more").symlink_to(tmp_path / "outside", target_is_directory=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "again.png").symlink_to(data / "dog" / "00.png")
    with pytest.raises(DataError, match="same image file more than once") as error:
        find_data(data)
    assert str(data / "dog" / "more" / "again.png") in str(error.value)


def test_val_folder_linked_to_train_is_refused(tmp_path, make_image):
    """Validating on the training images would report a perfect, meaningless accuracy."""
    data = build(tmp_path / "data", make_image, {"train/cat": 2, "train/dog": 2})
    (data / "val").symlink_to("train", target_is_directory=True)
    with pytest.raises(DataError, match="same image file more than once") as error:
        find_data(data)
    assert str(data / "train" / "cat" / "00.png") in str(error.value)
    assert str(data / "val" / "cat" / "00.png") in str(error.value)


def test_errors_about_classes_name_what_was_ignored(tmp_path, make_image):
    """A class folder that is a link to another class is left out: the error must say so, or the
    user sees "only one class" with two folders in front of them."""
    data = build(tmp_path / "data", make_image, {"cat": 3})
    (data / "dog").symlink_to("cat", target_is_directory=True)
    with pytest.raises(DataError, match=r"Only one class \('cat'\)") as error:
        find_data(data)
    assert "graft ignored folder links: dog/ (link to cat/, already part of the data)" in str(error.value)


def test_link_from_val_into_train_is_ignored_for_evaluation_too(tmp_path, make_image):
    """Evaluation reads val/ only: a link there to train/ must not evaluate on training images."""
    data = build(tmp_path / "data", make_image, {"train/cat": 3, "train/dog": 3, "val/cat": 1, "val/dog": 1})
    (data / "val" / "dog" / "more").symlink_to(data / "train" / "dog", target_is_directory=True)
    (data / "val" / "cow").symlink_to(data / "train" / "cat", target_is_directory=True)
    samples, _ = find_eval_data(data, ["cat", "dog"])
    assert sorted(s.path.relative_to(data).as_posix() for s in samples) == ["val/cat/00.png", "val/dog/00.png"]
    splits = find_data(data)
    assert len(splits.val) == 2 and "val/dog/more/ (link to train/dog/, already part of the data)" in splits.describe()


# -- 4. Empty files ----------------------------------------------------------------------------


def test_empty_image_file_says_it_is_empty(tmp_path, make_image):
    data = build(tmp_path / "data", make_image, {"cat": 3, "dog": 3})
    (data / "cat" / "download.jpg").touch()
    splits = find_data(data)
    assert [s.path.name for s in splits.skipped] == ["download.jpg"]
    assert splits.skipped[0].reason.startswith("empty file (0 bytes)")
    with pytest.raises(BadImageError, match=r"empty file \(0 bytes\)"):
        load_image(data / "cat" / "download.jpg")


# -- Reading order ---------------------------------------------------------------------------


def test_seeded_split_is_unchanged_by_the_new_folder_reading(tmp_path, make_image):
    """The seeded train/val split depends on the order a class's images are listed in: reading
    folders (links followed after) must keep the order of earlier versions, os.walk's."""
    from sklearn.model_selection import train_test_split

    data = tmp_path / "data"
    nested = ("z.png", "a/y.png", "a/b/x.png", "a/c.png", "b.png", "m/0.png", "m/n/1.png", "B/2.png",
              "a b/3.png", "a-b/4.png")
    for name in ("cat", "dog"):
        for index, relative in enumerate(nested):
            make_image(data / name / relative, size=(8, 8), seed=index)
    splits = find_data(data, val_split=0.3, seed=3, check_images=False)
    for label, name in enumerate(splits.classes):
        listed = []
        for root, folders, files in os.walk(data / name):
            folders.sort()
            listed.extend(Path(root, file) for file in sorted(files))
        _, val = train_test_split(listed, test_size=3, random_state=3)
        assert sorted(val) == [s.path for s in splits.val if s.label == label]
