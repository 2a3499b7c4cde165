"""Finding data in every accepted layout, refusing bad data with clear messages, and reading every
kind of image file as the RGB picture a viewer would show."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from graft.data.dataset import ImageDataset
from graft.data.discover import Sample, SkippedFile, find_data, find_eval_data, write_skipped_report
from graft.data.images import IMAGE_EXTENSIONS, load_image
from graft.errors import BadImageError, DataError

CLASSES = ["blue", "green", "red"]


def names(samples):
    return [s.path.name for s in samples]


def reasons(splits):
    return {s.path.name: s.reason for s in splits.skipped}


def pixel(image, xy=(5, 5)):
    return np.asarray(image.getpixel(xy), dtype=int)


def build(root: Path, make_image, layout: dict[str, int], suffix=".png") -> Path:
    """`layout` maps "split/class" (or "class") to an image count."""
    for folder, count in layout.items():
        for index in range(count):
            make_image(root / folder / f"{index:02d}{suffix}", size=(16, 16), seed=index)
    return root


def valid_bytes(make_image, tmp_path, suffix, size=(64, 64)) -> bytes:
    return make_image(tmp_path / f"source{suffix}", size=size).read_bytes()


# -- Layouts -----------------------------------------------------------------------------------


def test_split_folders(tiny_dataset):
    splits = find_data(tiny_dataset)
    assert splits.classes == CLASSES
    assert splits.counts("train") == {"blue": 12, "green": 12, "red": 12}
    assert splits.counts("val") == {"blue": 4, "green": 4, "red": 4} and splits.test == []
    assert all(s.path.parent.name == CLASSES[s.label] for s in splits.train + splits.val)
    assert all(s.path.parts[-3] == "val" for s in splits.val)
    assert [s.path for s in splits.train] == sorted(s.path for s in splits.train)
    assert splits.skipped == [] and splits.source == str(tiny_dataset)
    summary = splits.describe()
    assert "36 train, 12 val" in summary and "red" in summary and "skipped" not in summary


def test_valid_alias_and_test_folder(tmp_path, make_image):
    layout = {f"{split}/{name}": 2 for split in ("train", "valid", "test") for name in ("cat", "dog")}
    splits = find_data(build(tmp_path, make_image, layout))
    assert splits.classes == ["cat", "dog"]
    assert {s.path.parts[-3] for s in splits.val} == {"valid"} and len(splits.val) == 4
    assert {s.path.parts[-3] for s in splits.test} == {"test"} and len(splits.test) == 4


def test_flat_folder_is_split_stratified_and_seeded(tiny_flat_dataset):
    first = find_data(tiny_flat_dataset, val_split=0.2, seed=0)
    again = find_data(tiny_flat_dataset, val_split=0.2, seed=0)
    other = find_data(tiny_flat_dataset, val_split=0.2, seed=1)
    assert first.train == again.train and first.val == again.val
    assert first.val != other.val
    assert first.counts("val") == {"blue": 2, "green": 2, "red": 2}
    assert first.counts("train") == {"blue": 8, "green": 8, "red": 8}
    assert not {s.path for s in first.train} & {s.path for s in first.val}
    larger = find_data(tiny_flat_dataset, val_split=0.5, seed=0)
    assert larger.counts("val") == {"blue": 5, "green": 5, "red": 5}
    assert "20% of each class" in first.describe()


def test_train_folder_without_val_is_split(tmp_path, make_image):
    splits = find_data(build(tmp_path, make_image, {"train/a": 5, "train/b": 5, "test/a": 1, "test/b": 1}))
    assert splits.counts("val") == {"a": 1, "b": 1} and len(splits.train) == 8 and len(splits.test) == 2


def test_class_named_train_in_a_flat_folder_is_a_class(tmp_path, make_image):
    splits = find_data(build(tmp_path, make_image, {"train": 4, "bus": 4}))
    assert splits.classes == ["bus", "train"]


def test_csv_with_split_column_and_relative_paths(tmp_path, make_image):
    rows = ["path,label,split"]
    for name in ("cat", "dog"):
        for index, split in enumerate(["train", "train", "val", "test"]):
            make_image(tmp_path / "images" / f"{name}{index}.png", seed=index)
            rows.append(f"images/{name}{index}.png,{name},{split}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    splits = find_data(tmp_path / "data.csv")
    assert splits.classes == ["cat", "dog"]
    assert names(splits.val) == ["cat2.png", "dog2.png"] and names(splits.test) == ["cat3.png", "dog3.png"]
    assert splits.counts("train") == {"cat": 2, "dog": 2}
    assert splits.val[0].path == tmp_path / "images" / "cat2.png"


def test_csv_without_split_column_absolute_paths(tmp_path, make_image):
    rows = ["Path , Label"]  # header case and spaces do not matter
    for name in ("cat", "dog"):
        for index in range(5):
            rows.append(f"{make_image(tmp_path / 'img' / f'{name}{index}.png', seed=index)},{name}")
    csv_path = tmp_path / "sub" / "labels.csv"
    csv_path.parent.mkdir()
    csv_path.write_text("\n".join(rows) + "\n")
    splits = find_data(csv_path, val_split=0.2)
    assert splits.counts("val") == {"cat": 1, "dog": 1} and splits.counts("train") == {"cat": 4, "dog": 4}


# -- Refusing unusable data --------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist") as error:
        find_data(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(error.value) and "class folders" in str(error.value)


def test_file_that_is_not_csv(tmp_path, make_image):
    image = make_image(tmp_path / "photo.jpg")
    with pytest.raises(DataError, match="not a .csv") as error:
        find_data(image)
    assert str(image) in str(error.value) and "graft predict" in str(error.value)


def test_no_class_folders(tmp_path, make_image):
    make_image(tmp_path / "a.png")
    with pytest.raises(DataError, match="No class folders") as error:
        find_data(tmp_path)
    assert str(tmp_path) in str(error.value) and "1 image directly in it" in str(error.value)


def test_empty_class(tmp_path, make_image):
    build(tmp_path, make_image, {"cat": 3, "dog": 3})
    (tmp_path / "bird").mkdir()
    (tmp_path / "bird" / "notes.txt").write_text("todo")
    with pytest.raises(DataError, match="'bird' has no images") as error:
        find_data(tmp_path)
    assert str(tmp_path / "bird") in str(error.value)


def test_single_class(tmp_path, make_image):
    build(tmp_path, make_image, {"cat": 3})
    with pytest.raises(DataError, match="need at least two classes"):
        find_data(tmp_path)


def test_no_images_at_all(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "readme.md").write_text("x")
    with pytest.raises(DataError, match="No images found"):
        find_data(tmp_path)


def test_train_val_class_mismatch(tmp_path, make_image):
    build(tmp_path, make_image, {"train/cat": 2, "train/dog": 2, "train/fox": 2, "val/cat": 1, "val/owl": 1})
    with pytest.raises(DataError, match="different classes") as error:
        find_data(tmp_path)
    message = str(error.value)
    assert f"missing in {tmp_path / 'val'}: dog, fox" in message and "owl" in message


def test_val_without_train(tmp_path, make_image):
    build(tmp_path, make_image, {"val/cat": 2, "val/dog": 2})
    with pytest.raises(DataError, match="no training data"):
        find_data(tmp_path)


@pytest.mark.parametrize("val_split", [0, 1, 1.5, -0.1, float("nan")])
def test_bad_val_split(tiny_flat_dataset, val_split):
    with pytest.raises(DataError, match=f"val_split {val_split!r}"):
        find_data(tiny_flat_dataset, val_split=val_split)


def test_class_too_small_to_split(tmp_path, make_image):
    build(tmp_path, make_image, {"cat": 5, "dog": 1})
    with pytest.raises(DataError, match="'dog' has only 1 image"):
        find_data(tmp_path)


def test_csv_missing_columns(tmp_path):
    (tmp_path / "data.csv").write_text("file,class\na.png,cat\n")
    with pytest.raises(DataError, match="path,label") as error:
        find_data(tmp_path / "data.csv")
    assert "file, class" in str(error.value)


def test_csv_missing_files_are_named(tmp_path, make_image):
    make_image(tmp_path / "ok.png")
    rows = ["path,label", "ok.png,cat"] + [f"gone{i}.png,dog" for i in range(8)]
    (tmp_path / "data.csv").write_text("\n".join(rows))
    with pytest.raises(DataError, match="lists 8 files that do not exist") as error:
        find_data(tmp_path / "data.csv")
    assert "line 3: gone0.png" in str(error.value) and "and 3 more" in str(error.value)


def test_csv_bad_rows_and_bad_bytes(tmp_path):
    (tmp_path / "data.csv").write_text("path,label,split\na.png,cat,holdout\n,dog,train\n")
    with pytest.raises(DataError, match="line 2: split 'holdout'.*line 3: empty path"):
        find_data(tmp_path / "data.csv")
    (tmp_path / "latin.csv").write_bytes("path,label\nb\xe9b\xe9.png,cat\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        find_data(tmp_path / "latin.csv")


# -- Junk, non-images and broken files ---------------------------------------------------------


def test_hidden_and_junk_folders_are_ignored(tmp_path, make_image):
    build(tmp_path, make_image, {"cat": 3, "dog": 3, ".ipynb_checkpoints": 2, "cat/.ipynb_checkpoints": 2,
                                 "__MACOSX/cat": 2, "_private": 2})
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / ".git" / "HEAD").write_text("ref")
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "dog" / "Thumbs.db").write_bytes(b"\0\1")
    splits = find_data(tmp_path)
    assert splits.classes == ["cat", "dog"]
    assert len(splits.train) + len(splits.val) == 6 and splits.skipped == []


def test_non_image_files_are_skipped_and_reported(tmp_path, make_image):
    build(tmp_path, make_image, {"cat": 3, "dog": 3})
    (tmp_path / "cat" / "notes.txt").write_text("hello")
    (tmp_path / "dog" / "labels.json").write_text("{}")
    splits = find_data(tmp_path)
    assert reasons(splits) == {"notes.txt": "not an image (extension .txt)",
                               "labels.json": "not an image (extension .json)"}
    assert len(splits.train) + len(splits.val) == 6


def test_corrupt_image_is_skipped_and_left_untouched(tmp_path, make_image):
    build(tmp_path, make_image, {"cat": 3, "dog": 3})
    corrupt = tmp_path / "cat" / "broken.jpg"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    before = corrupt.read_bytes()
    files_before = sorted(tmp_path.rglob("*"))
    splits = find_data(tmp_path)
    assert "not an image file Pillow can read" in reasons(splits)["broken.jpg"]
    assert corrupt not in {s.path for s in splits.train + splits.val}
    assert corrupt.read_bytes() == before and sorted(tmp_path.rglob("*")) == files_before
    assert "1 file skipped" in splits.describe()


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_image_is_skipped(tmp_path, make_image, suffix):
    data = valid_bytes(make_image, tmp_path, suffix)
    build(tmp_path / "data", make_image, {"cat": 3, "dog": 3})
    (tmp_path / "data" / "cat" / f"half{suffix}").write_bytes(data[: len(data) // 2])
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    splits = find_data(tmp_path / "data")
    assert "truncated" in reasons(splits)[f"half{suffix}"]
    assert len(splits.train) + len(splits.val) == 6


def test_class_left_empty_by_unreadable_images(tmp_path, make_image):
    build(tmp_path, make_image, {"cat": 3})
    (tmp_path / "dog").mkdir()
    for index in range(2):
        (tmp_path / "dog" / f"{index}.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="'dog' has no images .*its 2 images unreadable"):
        find_data(tmp_path)


def test_check_images_off_keeps_unreadable_files(tmp_path, make_image):
    build(tmp_path, make_image, {"cat": 3, "dog": 3})
    (tmp_path / "dog" / "bad.png").write_bytes(b"not a png")
    splits = find_data(tmp_path, check_images=False, workers=1)
    assert len(splits.train) + len(splits.val) == 7 and splits.skipped == []


# -- Reading images ----------------------------------------------------------------------------


def test_image_extensions():
    assert {".jpg", ".jpeg", ".png", ".webp", ".tif", ".pgm"} <= IMAGE_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS)


def test_grayscale_comes_back_rgb(tmp_path):
    Image.new("L", (10, 10), 100).save(tmp_path / "gray.png")
    image = load_image(tmp_path / "gray.png")
    assert image.mode == "RGB" and tuple(pixel(image)) == (100, 100, 100)


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (10, 10), 1)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.save(tmp_path / "palette.png", transparency=0)
    image.save(tmp_path / "palette.gif", transparency=0)
    for name in ("palette.png", "palette.gif"):
        loaded = load_image(tmp_path / name)
        assert loaded.mode == "RGB"
        assert tuple(pixel(loaded, (0, 0))) == (255, 255, 255) and tuple(pixel(loaded)) == (0, 0, 255)


def test_rgba_composites_on_white(tmp_path):
    pixels = np.zeros((10, 10, 4), dtype=np.uint8)
    pixels[:] = (0, 200, 0, 255)
    pixels[0, 0] = (0, 0, 0, 0)  # fully transparent black: must show as white, not black
    pixels[0, 1] = (255, 0, 0, 128)  # half-transparent red over white: pink
    Image.fromarray(pixels, "RGBA").save(tmp_path / "rgba.png")
    image = load_image(tmp_path / "rgba.png")
    assert tuple(pixel(image, (0, 0))) == (255, 255, 255)
    assert np.abs(pixel(image, (1, 0)) - (255, 127, 127)).max() <= 2
    assert tuple(pixel(image)) == (0, 200, 0)


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    image = load_image(tmp_path / "cmyk.jpg")
    assert image.mode == "RGB" and np.abs(pixel(image) - (255, 0, 0)).max() <= 8


@pytest.mark.parametrize("suffix", [".png", ".tif", ".pgm"])
def test_sixteen_bit_is_scaled_not_clipped(tmp_path, suffix):
    values = np.array([[65535, 32768, 1000, 0]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / f"deep{suffix}")
    assert Image.open(tmp_path / f"deep{suffix}").mode in ("I;16", "I;16B", "I")
    image = load_image(tmp_path / f"deep{suffix}")
    row = [image.getpixel((x, 0)) for x in range(4)]
    assert row[0] == (255, 255, 255) and row[1] == (128, 128, 128) and row[3] == (0, 0, 0)
    assert row[2][0] in (3, 4)


def test_float_image_in_zero_one_range(tmp_path):
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(tmp_path / "float.tif")
    image = load_image(tmp_path / "float.tif")
    assert [image.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path):
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "phone.jpg")
    assert image.size == (20, 40)
    assert pixel(image, (10, 5))[0] > 200 and pixel(image, (10, 35))[2] > 200  # left half is now on top


@pytest.mark.parametrize("limit, detail", [(1000, "more than 2,000 pixels"), (6000, "100 x 100 pixels")])
def test_decompression_bomb_is_refused(tmp_path, monkeypatch, limit, detail):
    Image.new("RGB", (100, 100)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(BadImageError, match="decompression bomb") as error:
        load_image(tmp_path / "bomb.png")
    assert detail in error.value.reason and error.value.path == tmp_path / "bomb.png"


def test_jpeg_draft_decodes_at_reduced_scale(tmp_path, make_image):
    path = make_image(tmp_path / "big.jpg", size=(1000, 750))
    assert load_image(path).size == (1000, 750)
    width, height = load_image(path, draft_size=(256, 256)).size
    assert 256 <= width < 1000 and 256 <= height < 750


@pytest.mark.parametrize("content, reason", [
    (None, "file not found"),
    (b"", r"empty file \(0 bytes\)"),
    (b"GIF89a" + b"\0" * 5, "not an image file Pillow can read"),
])
def test_unreadable_files_raise_bad_image_error(tmp_path, content, reason):
    path = tmp_path / "x.gif"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadImageError, match=reason) as error:
        load_image(path)
    assert str(path) in str(error.value)


# -- Dataset, evaluation data, report ----------------------------------------------------------


def test_image_dataset_returns_transformed_tensors_and_labels(tiny_dataset):
    splits = find_data(tiny_dataset, check_images=False)

    def transform(image):
        return torch.from_numpy(np.asarray(image.resize((8, 8)), dtype=np.float32)).permute(2, 0, 1)

    dataset = ImageDataset(splits.val, transform)
    assert len(dataset) == 12
    tensor, label = dataset[0]
    assert tensor.shape == (3, 8, 8) and label == splits.val[0].label
    red = CLASSES.index("red")
    tensor, label = dataset[[s.label for s in splits.val].index(red)]
    assert label == red and tensor[0].mean() > tensor[2].mean() + 50
    unlabelled = ImageDataset.from_paths([str(splits.val[0].path)], transform)
    assert unlabelled[0][1] == -1 and unlabelled[0][0].shape == (3, 8, 8)


def test_find_eval_data_uses_val_or_test_and_model_labels(tiny_dataset, tmp_path, make_image):
    model_classes = ["blue", "cyan", "green", "red"]
    samples, skipped = find_eval_data(tiny_dataset, model_classes)
    assert len(samples) == 12 and skipped == []
    assert all(s.path.parts[-3] == "val" and model_classes[s.label] == s.path.parent.name for s in samples)
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    build(data, make_image, {"test/red": 2})
    samples, _ = find_eval_data(data, model_classes)
    assert len(samples) == 2 and {model_classes[s.label] for s in samples} == {"red"}


def test_find_eval_data_unknown_class(tiny_flat_dataset):
    with pytest.raises(DataError, match="does not know: red") as error:
        find_eval_data(tiny_flat_dataset, ["blue", "green", "yellow"])
    assert "blue, green, yellow" in str(error.value)


def test_find_eval_data_refuses_train_only(tmp_path, make_image):
    build(tmp_path, make_image, {"train/cat": 1, "train/dog": 1})
    with pytest.raises(DataError, match="no val or test split"):
        find_eval_data(tmp_path, ["cat", "dog"])


def test_write_skipped_report(tmp_path):
    skipped = [SkippedFile(Path("/data/a.txt"), "not an image (extension .txt)"),
               SkippedFile(Path("/data/b.jpg"), "truncated or corrupt image data")]
    target = tmp_path / "run" / "skipped.json"
    write_skipped_report(skipped, target)
    assert json.loads(target.read_text()) == [
        {"path": "/data/a.txt", "reason": "not an image (extension .txt)"},
        {"path": "/data/b.jpg", "reason": "truncated or corrupt image data"},
    ]
    assert [p.name for p in target.parent.iterdir()] == ["skipped.json"]


def test_samples_are_hashable_values():
    assert Sample(Path("a.png"), 1) == Sample(Path("a.png"), 1)
    assert len({Sample(Path("a.png"), 1), Sample(Path("a.png"), 1)}) == 1
    with pytest.raises(AttributeError):
        Sample(Path("a.png"), 1).label = 2



def test_a_second_find_data_on_unchanged_files_skips_decoding(tmp_path, monkeypatch, make_image):
    """Readability is remembered per file list (its files_fingerprint); any change checks again."""
    from graft.data import discover

    root = tmp_path / "data"
    for split in ("train", "val"):
        for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
            for index in range(2):
                make_image(root / split / name / f"{index}.png", color=colour, seed=index)
    decoded = []
    real = discover._read_problem
    monkeypatch.setattr(discover, "_read_problem", lambda path: decoded.append(path) or real(path))
    find_data(root)
    assert len(decoded) == 8
    find_data(root)
    assert len(decoded) == 8  # remembered: nothing decoded
    (root / "val" / "red" / "0.png").write_bytes(b"not an image any more")
    splits = find_data(root)
    assert len(decoded) == 16 and len(splits.skipped) == 1  # changed: all checked again, and the bad one found
    find_data(root)
    assert len(decoded) == 24  # a list with an unreadable file is never remembered as readable
