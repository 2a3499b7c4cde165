"""Data discovery and image loading: every layout, and every kind of bad input, one test each."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from graft.data.dataset import ImageDataset
from graft.data.discover import find_data, find_eval_data, write_skipped_report
from graft.data.images import load_image
from graft.data.transforms import eval_transform
from graft.backbones import DataConfig
from graft.errors import BadImageError, DataError


def _classes_folder(root, make_image, counts={"cat": 5, "dog": 5}):
    for name, count in counts.items():
        for i in range(count):
            make_image(root / name / f"{i}.png", seed=hash((name, i)) % 1000)
    return root


# Layouts -------------------------------------------------------------------------------------


def test_train_val_folders(tiny_dataset):
    splits = find_data(tiny_dataset)
    assert splits.classes == ["blue", "green", "red"]
    assert len(splits.train) == 36 and len(splits.val) == 12 and splits.test == []
    assert splits.counts("val") == {"blue": 4, "green": 4, "red": 4}
    assert all(s.path.parent.name == splits.classes[s.label] for s in splits.train)


def test_valid_alias_and_test_folder(tmp_path, make_image):
    for split in ("train", "valid", "test"):
        _classes_folder(tmp_path / split, make_image, {"a": 3, "b": 3})
    splits = find_data(tmp_path)
    assert len(splits.val) == 6 and len(splits.test) == 6 and len(splits.train) == 6


def test_train_and_test_without_val_splits_val_off_train(tmp_path, make_image):
    _classes_folder(tmp_path / "train", make_image, {"a": 10, "b": 10})
    _classes_folder(tmp_path / "test", make_image, {"a": 2, "b": 2})
    splits = find_data(tmp_path, val_split=0.2)
    assert len(splits.train) == 16 and len(splits.val) == 4 and len(splits.test) == 4
    assert not {s.path for s in splits.val} & {s.path for s in splits.train}


def test_single_folder_split_is_stratified_and_seeded(tiny_flat_dataset):
    first = find_data(tiny_flat_dataset, val_split=0.3, seed=1)
    again = find_data(tiny_flat_dataset, val_split=0.3, seed=1)
    other = find_data(tiny_flat_dataset, val_split=0.3, seed=2)
    assert first.val == again.val and first.val != other.val
    assert len(first.val) == 9 and first.counts("val") == {"blue": 3, "green": 3, "red": 3}
    assert not {s.path for s in first.val} & {s.path for s in first.train}


@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, 1.5])
def test_bad_val_split_is_named(tiny_flat_dataset, value):
    with pytest.raises(DataError, match=f"--val-split {value}"):
        find_data(tiny_flat_dataset, val_split=value)


def test_csv_with_and_without_split_column(tmp_path, make_image):
    rows = []
    for name in ("a", "b"):
        for i in range(6):
            make_image(tmp_path / "img" / f"{name}{i}.png", seed=i)
            rows.append((f"img/{name}{i}.png", name, "val" if i < 2 else "train"))
    with open(tmp_path / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label"), *[r[:2] for r in rows]])
    with open(tmp_path / "split.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("path", "label", "split"), *rows])
    plain = find_data(tmp_path / "labels.csv", val_split=0.25)
    assert plain.classes == ["a", "b"] and len(plain.train) + len(plain.val) == 12 and len(plain.val) == 3
    split = find_data(tmp_path / "split.csv")
    assert len(split.val) == 4 and len(split.train) == 8


def test_csv_errors_name_the_problem(tmp_path, make_image):
    bad_header = tmp_path / "h.csv"
    bad_header.write_text("file,class\nx.png,a\n")
    with pytest.raises(DataError, match="path,label"):
        find_data(bad_header)
    missing = tmp_path / "m.csv"
    missing.write_text("path,label\nnope.png,a\nnope2.png,b\n")
    with pytest.raises(DataError, match="nope.png"):
        find_data(missing)


# Bad folders -----------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        find_data(tmp_path / "nowhere")


def test_a_file_that_is_not_a_csv(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a .csv"):
        find_data(tmp_path / "notes.txt")


def test_no_class_folders(tmp_path, make_image):
    make_image(tmp_path / "loose.png")
    with pytest.raises(DataError, match="no class folders"):
        find_data(tmp_path)


def test_empty_class_is_named(tmp_path, make_image):
    _classes_folder(tmp_path, make_image)
    (tmp_path / "bird").mkdir()
    with pytest.raises(DataError, match="'bird' has no readable images"):
        find_data(tmp_path)


def test_single_class(tmp_path, make_image):
    _classes_folder(tmp_path, make_image, {"cat": 4})
    with pytest.raises(DataError, match="at least two classes"):
        find_data(tmp_path)


def test_classes_differ_between_train_and_val(tmp_path, make_image):
    _classes_folder(tmp_path / "train", make_image, {"cat": 3, "dog": 3, "fox": 3})
    _classes_folder(tmp_path / "val", make_image, {"cat": 2, "dog": 2, "owl": 2})
    with pytest.raises(DataError, match="missing in val/: fox; only in val/: owl"):
        find_data(tmp_path)


def test_hidden_and_junk_folders_are_ignored(tmp_path, make_image):
    _classes_folder(tmp_path, make_image)
    make_image(tmp_path / ".ipynb_checkpoints" / "x.png")
    make_image(tmp_path / "cat" / ".ipynb_checkpoints" / "x-checkpoint.png")
    (tmp_path / ".git").mkdir()
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\0\0")
    splits = find_data(tmp_path)
    assert splits.classes == ["cat", "dog"]
    assert len(splits.train) + len(splits.val) == 10 and not splits.skipped


def test_non_image_files_are_skipped_and_reported(tmp_path, make_image):
    _classes_folder(tmp_path, make_image)
    (tmp_path / "cat" / "notes.txt").write_text("a cat")
    splits = find_data(tmp_path)
    assert [(s.path.name, "extension .txt" in s.reason) for s in splits.skipped] == [("notes.txt", True)]
    report = tmp_path / "skipped.json"
    write_skipped_report(splits.skipped, report)
    assert json.loads(report.read_text())[0]["path"].endswith("notes.txt")


@pytest.mark.parametrize("damage", ["random", "truncated-jpeg", "truncated-png", "empty"])
def test_corrupt_images_are_skipped_reported_and_left_untouched(tmp_path, make_image, damage):
    _classes_folder(tmp_path, make_image)
    bad = tmp_path / "cat" / ("bad.png" if damage == "truncated-png" else "bad.jpg")
    if damage == "random":
        content = np.random.default_rng(0).bytes(2000)
    elif damage == "empty":
        content = b""
    else:
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            buffer, "PNG" if damage == "truncated-png" else "JPEG"
        )
        content = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    bad.write_bytes(content)
    splits = find_data(tmp_path)
    assert [s.path for s in splits.skipped] == [bad]
    assert bad not in {s.path for s in splits.train + splits.val}
    assert bad.read_bytes() == content  # never modified
    with pytest.raises(BadImageError):
        load_image(bad)


# Image modes ---------------------------------------------------------------------------------


def test_grayscale_palette_and_cmyk_become_rgb(tmp_path):
    gray = tmp_path / "gray.png"
    Image.new("L", (8, 8), 100).save(gray)
    assert load_image(gray).mode == "RGB" and load_image(gray).getpixel((0, 0)) == (100, 100, 100)
    palette = tmp_path / "palette.gif"
    Image.new("RGB", (8, 8), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE).save(palette)
    assert load_image(palette).getpixel((0, 0)) == pytest.approx((10, 200, 30), abs=8)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(cmyk)  # pure red in CMYK
    red = load_image(cmyk).getpixel((4, 4))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_transparent_pixels_become_white(tmp_path):
    rgba = tmp_path / "rgba.png"
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))
    image.save(rgba)
    loaded = load_image(rgba)
    assert loaded.getpixel((0, 0)) == (255, 255, 255) and loaded.getpixel((5, 5)) == (255, 0, 0)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    loaded = np.asarray(load_image(path))[0, :, 0]
    assert loaded.tolist() == [0, 4, 128, 255]  # 1000 would clip to 255 with a plain convert


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (40, 20), (0, 0, 255)).save(path, exif=exif)
    assert load_image(path).size == (20, 40)


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(BadImageError, match="decompression bomb"):
        load_image(path)


def test_large_jpegs_decode_in_draft_mode(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (1000, 750), (120, 80, 40)).save(path)
    image = load_image(path, draft_size=(256, 256))
    assert 256 <= min(image.size) and image.size[0] < 1000


# Datasets and evaluation data ----------------------------------------------------------------


def test_image_dataset_returns_transformed_tensors_and_labels(tiny_dataset):
    splits = find_data(tiny_dataset)
    config = DataConfig(input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3)
    dataset = ImageDataset(splits.val, eval_transform(config))
    tensor, label = dataset[0]
    assert tensor.shape == (3, 32, 32) and label == splits.val[0].label
    assert ImageDataset.from_paths([splits.val[0].path], eval_transform(config))[0][1] == -1


def test_eval_data_with_an_unknown_class_is_refused(tiny_dataset):
    samples, _ = find_eval_data(tiny_dataset, ["blue", "green", "red"])
    assert len(samples) == 12  # the val/ split
    with pytest.raises(DataError, match="red are not among the model's classes"):
        find_eval_data(tiny_dataset / "val", ["blue", "green"])
