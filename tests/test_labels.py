"""Label files (CSV, TSV, JSONL, Hugging Face imagefolder metadata) and several labels per image:
reading every format, refusing bad label files with the file, the line and the fix, the one data
model of both tasks, and the iteratively stratified split of multi-label data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from graft.data.discover import DataSplits, Sample, find_data, find_eval_data, sample_targets
from graft.data.stratify import iterative_split
from graft.errors import DataError

NAMES = ["cat", "dog", "owl"]

# Image name -> labels: every class in at least two images, images with one, two and three labels.
TAGS = {f"{index:02d}": labels for index, labels in enumerate(
    [["cat"], ["dog"], ["owl"], ["cat", "dog"], ["dog", "owl"], ["cat", "owl"], ["cat", "dog", "owl"], ["cat"],
     ["dog"], ["owl"], ["cat", "dog"], ["owl", "cat"]])}


def images(root: Path, make_image, names=TAGS, folder: str = "img") -> Path:
    for index, name in enumerate(names):
        make_image(root / folder / f"{name}.png", size=(8, 8), seed=index)
    return root


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def label_sets(samples: list[Sample], classes: list[str]) -> dict[str, set[str]]:
    return {sample.path.stem: {classes[index] for index in sample.labels} for sample in samples}


def every_sample(splits: DataSplits) -> list[Sample]:
    return splits.train + splits.val + splits.test


def imagefolder(root: Path, make_image, per_split: dict[str, int]) -> Path:
    """Hugging Face's imagefolder layout: root/<split>/NNN.png and root/<split>/metadata.jsonl,
    each image labelled with one or two of NAMES."""
    for split, count in per_split.items():
        lines = []
        for index in range(count):
            make_image(root / split / f"{index:03d}.png", size=(8, 8), seed=index)
            labels = [NAMES[index % 3]] + ([NAMES[(index + 1) % 3]] if index % 2 else [])
            lines.append(json.dumps({"file_name": f"{index:03d}.png", "labels": labels}))
        (root / split / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


# -- Formats -----------------------------------------------------------------------------------


def test_split_folders_of_an_imagefolder_set_are_never_classes(tmp_path, make_image):
    """Issue 25: train/ and val/ holding images and a metadata.jsonl were read as two classes,
    "train" and "val", the metadata files skipped as unreadable images."""
    splits = find_data(imagefolder(tmp_path, make_image, {"train": 12, "val": 6}), task="auto")
    assert splits.classes == NAMES and splits.task == "multilabel"
    assert len(splits.train) == 12 and len(splits.val) == 6 and splits.skipped == []
    assert label_sets(splits.val, NAMES)["001"] == {"dog", "owl"} and label_sets(splits.val, NAMES)["002"] == {"owl"}
    assert {s.path.parent.name for s in splits.val} == {"val"} and "metadata.jsonl" in splits.layout


def test_split_folders_with_loose_images_are_never_classes(tmp_path, make_image):
    for split in ("train", "val"):
        make_image(tmp_path / split / "1.png", size=(8, 8))
    with pytest.raises(DataError, match="No class folders in") as error:
        find_data(tmp_path)
    assert "metadata.jsonl" in str(error.value)


def test_space_separated_labels_column(tmp_path, make_image):
    """tags-dev's and Planet's form: a labels (or tags) column, labels separated by spaces."""
    images(tmp_path, make_image)
    csv = write(tmp_path / "train.csv", ["path,labels"] + [f"img/{name}.png,{' '.join(tags)}" for name, tags in TAGS.items()])
    splits = find_data(csv, task="auto")
    assert splits.task == "multilabel" and splits.classes == NAMES
    assert label_sets(every_sample(splits), NAMES) == {name: set(tags) for name, tags in TAGS.items()}
    assert all(sample.label == -1 for sample in every_sample(splits))
    assert splits.counts("train")["cat"] + splits.counts("val")["cat"] == 7


@pytest.mark.parametrize("cell", ['"cat|dog"', '"cat; dog"', '"cat, dog"', '"[\'cat\', \'dog\']"', '"[""cat"", ""dog""]"'])
def test_every_way_of_writing_several_labels(tmp_path, make_image, cell):
    images(tmp_path, make_image)
    rows = [f"img/{name}.png,{cell if name == '03' else tags[0]}" for name, tags in TAGS.items()]
    rows.append("img/xx.png,owl")
    make_image(tmp_path / "img" / "xx.png", size=(8, 8))
    splits = find_data(write(tmp_path / "data.csv", ["path,label", *rows]), task="auto")
    assert label_sets(every_sample(splits), NAMES)["03"] == {"cat", "dog"} and splits.task == "multilabel"


def test_a_space_belongs_to_the_label_in_a_label_column_and_beside_a_separator(tmp_path, make_image):
    images(tmp_path, make_image, ["a", "b", "c", "d"])
    single = write(tmp_path / "single.csv", ["path,label", "img/a.png,golden retriever", "img/b.png,golden retriever",
                                             "img/c.png,sea lion", "img/d.png,sea lion"])
    splits = find_data(single, task="auto")
    assert splits.task == "single" and splits.classes == ["golden retriever", "sea lion"]
    several = write(tmp_path / "several.csv", ["path,labels", "img/a.png,golden retriever|sea lion",
                                               "img/b.png,golden retriever", "img/c.png,sea lion", "img/d.png,sea lion"])
    splits = find_data(several, task="auto")
    assert splits.classes == ["golden retriever", "sea lion"] and splits.task == "multilabel"


def test_tsv_and_a_semicolon_csv(tmp_path, make_image):
    images(tmp_path, make_image)
    tsv = write(tmp_path / "data.tsv", ["path\tlabels"] + [f"img/{name}.png\t{' '.join(tags)}" for name, tags in TAGS.items()])
    semicolons = write(tmp_path / "excel.csv", ["path;labels"] + [f"img/{name}.png;{' '.join(tags)}" for name, tags in TAGS.items()])
    for file in (tsv, semicolons):
        splits = find_data(file, task="auto")
        assert label_sets(every_sample(splits), NAMES) == {name: set(tags) for name, tags in TAGS.items()}


def test_planet_style_names_without_extension(tmp_path, make_image):
    images(tmp_path, make_image, folder="train-jpg")
    rows = ["image_name,tags"] + [f"{name},{' '.join(tags)}" for name, tags in TAGS.items()]
    inside = write(tmp_path / "train-jpg" / "train_v2.csv", rows)
    splits = find_data(inside, task="auto")
    assert label_sets(every_sample(splits), NAMES)["06"] == {"cat", "dog", "owl"}
    assert every_sample(splits)[0].path.suffix == ".png"
    beside = write(tmp_path / "train_v2.csv", rows)
    with pytest.raises(DataError, match="lists 12 files that do not exist") as error:
        find_data(beside, task="auto")
    assert "00 is in train-jpg/: write the paths as train-jpg/00, or put the CSV in train-jpg/" in str(error.value)


def test_jsonl_labels_as_lists_and_strings(tmp_path, make_image):
    images(tmp_path, make_image)
    lines = []
    for index, (name, tags) in enumerate(TAGS.items()):
        labels = tags if index % 2 else " ".join(tags)
        key = "file_name" if index % 3 else "path"
        lines.append(json.dumps({key: f"img/{name}.png", "labels": labels, "split": "val" if index >= 9 else "train"}))
    splits = find_data(write(tmp_path / "data.jsonl", lines), task="auto")
    assert label_sets(every_sample(splits), NAMES) == {name: set(tags) for name, tags in TAGS.items()}
    assert [s.path.stem for s in splits.val] == ["09", "10", "11"] and "JSONL file with a split column" in splits.layout


def test_imagefolder_metadata_in_the_data_folder_with_split_paths(tmp_path, make_image):
    rows = ["file_name,label"]
    for split, count in (("train", 6), ("validation", 2), ("test", 2)):
        for index in range(count):
            for name in ("cat", "dog"):
                make_image(tmp_path / split / f"{name}{index}.png", size=(8, 8), seed=index)
                rows.append(f"{split}/{name}{index}.png,{name}")
    write(tmp_path / "metadata.csv", rows)
    splits = find_data(tmp_path, task="auto")
    assert splits.task == "single" and splits.classes == ["cat", "dog"]
    assert (len(splits.train), len(splits.val), len(splits.test)) == (12, 4, 4)
    assert [s.label for s in splits.val] == [0, 0, 1, 1] and splits.val[0].labels == (0,)


def test_the_same_data_in_every_format_gives_the_same_splits(tmp_path, make_image):
    images(tmp_path, make_image)
    csv = write(tmp_path / "a.csv", ["path,labels"] + [f"img/{n}.png,{' '.join(t)}" for n, t in TAGS.items()])
    reordered = write(tmp_path / "b.csv", ["labels,path"] + [f'"{"|".join(t)}",img/{n}.png' for n, t in reversed(TAGS.items())])
    jsonl = write(tmp_path / "c.jsonl", [json.dumps({"path": f"img/{n}.png", "labels": t}) for n, t in TAGS.items()])
    write(tmp_path / "img" / "metadata.jsonl", [json.dumps({"file_name": f"{n}.png", "labels": t}) for n, t in TAGS.items()])
    found = [find_data(source, task="auto", val_split=0.25, seed=3) for source in (csv, reordered, jsonl, tmp_path / "img")]
    assert all((s.classes, s.train, s.val) == (found[0].classes, found[0].train, found[0].val) for s in found)


def test_today_s_single_label_csv_reads_the_same_under_every_task_that_takes_it(tmp_path, make_image):
    rows = ["path,label"]
    for index in range(10):
        for name in ("cat", "dog"):
            rows.append(f"{make_image(tmp_path / 'img' / f'{name}{index}.png', size=(8, 8), seed=index)},{name}")
    csv = write(tmp_path / "data.csv", rows)
    default, auto = find_data(csv), find_data(csv, task="auto")
    assert (default.train, default.val, default.task) == (auto.train, auto.val, "single")
    multi = find_data(csv, task="multilabel")
    assert multi.task == "multilabel" and {len(s.labels) for s in multi.train} == {1}
    assert all(s.label == -1 for s in multi.train) and multi.counts("val") == {"cat": 2, "dog": 2}


def test_class_folders_as_multilabel_data(tiny_dataset):
    splits = find_data(tiny_dataset, task="multilabel")
    assert splits.task == "multilabel" and splits.classes == ["blue", "green", "red"]
    assert all(splits.classes[s.labels[0]] == s.path.parent.name and s.label == -1 for s in splits.train)
    assert find_data(tiny_dataset, task="auto").task == "single"


def test_explicit_no_label_images_are_counted_and_said(tmp_path, make_image):
    images(tmp_path, make_image, [*TAGS, "empty1", "empty2"])
    rows = [json.dumps({"path": f"img/{n}.png", "labels": t}) for n, t in TAGS.items()]
    rows += [json.dumps({"path": "img/empty1.png", "labels": []}), json.dumps({"path": "img/empty2.png", "label": "[]"})]
    splits = find_data(write(tmp_path / "data.jsonl", rows), task="auto")
    assert splits.task == "multilabel"
    assert {s.path.stem for s in every_sample(splits) if not s.labels} == {"empty1", "empty2"}
    assert "2 images with no label" in splits.describe()
    with pytest.raises(DataError, match=r"2 images no label \(e.g. data.jsonl line 13\)"):
        find_data(tmp_path / "data.jsonl", task="single")


# -- The data model ----------------------------------------------------------------------------


def test_samples_of_both_tasks():
    single = Sample(Path("a.png"), 2)
    assert single.labels == (2,) and single == Sample(Path("a.png"), 2, (2,))
    multi = Sample(Path("b.png"), -1, (0, 2))
    assert multi.label == -1 and multi.labels == (0, 2) and Sample(Path("c.png"), -1).labels == ()
    with pytest.raises(ValueError, match="class 1 cannot have the labels"):
        Sample(Path("a.png"), 1, (0, 1))
    assert sample_targets([single, Sample(Path("d.png"), 0)], 3).tolist() == [2, 0]
    assert sample_targets([single], 3).dtype == np.int64
    hot = sample_targets([multi, Sample(Path("c.png"), -1)], 3, "multilabel")
    assert hot.dtype == np.float32 and hot.tolist() == [[1, 0, 1], [0, 0, 0]]


def test_counts_cardinality_targets_and_description_of_multilabel_splits():
    train = [Sample(Path(f"{i}.png"), -1, labels) for i, labels in enumerate([(0,), (0, 1), (0, 1, 2), ()])]
    val = [Sample(Path("v.png"), -1, (1, 2))]
    splits = DataSplits(["a", "b", "c"], train, val, source="data.csv", layout="CSV file", task="multilabel")
    assert splits.counts("train") == {"a": 3, "b": 2, "c": 1} and splits.counts("val") == {"a": 0, "b": 1, "c": 1}
    assert splits.cardinality("train") == 1.5 and splits.cardinality("val") == 2 and splits.cardinality("test") == 0
    assert splits.targets(val).tolist() == [[0, 1, 1]]
    lines = splits.describe().splitlines()
    assert lines[1] == "3 classes, multi-label; images: 4 train, 1 val"
    assert lines[2] == "labels per image: 1.50 train, 2.00 val; 1 image with no label"
    assert lines[3] == "images per label:" and lines[4].split() == ["a", "3", "train", "0", "val"]
    single = DataSplits(["a", "b"], [Sample(Path("x.png"), 1)], [Sample(Path("y.png"), 0)])
    assert "2 classes, single-label; images: 1 train, 1 val" in single.describe()
    assert single.targets(single.train).tolist() == [1] and single.cardinality("train") == 1


# -- Refusing bad label files ------------------------------------------------------------------


def test_multilabel_data_is_refused_where_one_label_per_image_is_taken(tmp_path, make_image):
    images(tmp_path, make_image)
    csv = write(tmp_path / "data.csv", ["path,labels"] + [f"img/{n}.png,{' '.join(t)}" for n, t in TAGS.items()])
    for read in (lambda: find_data(csv), lambda: find_eval_data(csv, NAMES)):
        with pytest.raises(DataError, match="this is multi-label data, which this step reads as one label per image only. graft train trains on it") as error:
            read()
        assert f"{csv} gives 6 images several labels (e.g. data.csv line 5: cat, dog)" in str(error.value)


def test_graft_train_refuses_a_balanced_sampler_on_multilabel_data_before_any_work(tmp_path, make_image):
    """Multi-label training reads the file (test_multilabel trains on it); a sampler that draws each class
    equally often cannot, and says so before a feature is extracted or a folder made."""
    import graft
    from graft.errors import GraftError

    images(tmp_path, make_image)
    csv = write(tmp_path / "data.csv", ["path,labels"] + [f"img/{n}.png,{' '.join(t)}" for n, t in TAGS.items()])
    with pytest.raises(GraftError, match="--sampler balanced draws each class equally often"):
        graft.train(csv, strategy="linear-probe", out=tmp_path / "runs", sampler="balanced")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_bad_task():
    with pytest.raises(DataError, match="task 'multi' .--task. must be one of auto, single, multilabel"):
        find_data(Path(__file__).parent, task="multi")


@pytest.mark.parametrize("second", ["img/00.png,dog", "./img/00.png,cat"])
def test_the_same_image_twice(tmp_path, make_image, second):
    images(tmp_path, make_image)
    csv = write(tmp_path / "data.csv", ["path,labels", "img/00.png,cat", "img/01.png,dog", second])
    with pytest.raises(DataError, match="lists the same file more than once") as error:
        find_data(csv, task="auto")
    said = "'cat' and 'dog'" if "dog" in second else "the same labels"
    assert f"{tmp_path / 'img' / '00.png'} (line 2, line 4: {said})" in str(error.value)
    assert "all its labels in that one row" in str(error.value)


def test_the_same_image_in_two_split_folders_metadata(tmp_path, make_image):
    imagefolder(tmp_path, make_image, {"train": 4, "val": 2})
    with (tmp_path / "val" / "metadata.jsonl").open("a") as handle:
        handle.write(json.dumps({"file_name": "../train/000.png", "labels": ["cat"]}) + "\n")
    with pytest.raises(DataError, match="lists the same file more than once") as error:
        find_data(tmp_path, task="auto")
    assert "train/metadata.jsonl line 1, val/metadata.jsonl line 3" in str(error.value)


def test_labels_that_differ_only_in_case(tmp_path, make_image):
    images(tmp_path, make_image)
    rows = ["path,labels", "img/00.png,tulips", "img/01.png,Tulips daisy", "img/02.png,daisy", "img/03.png,tulips"]
    with pytest.raises(DataError, match="differ only in case") as error:
        find_data(write(tmp_path / "data.csv", rows), task="auto")
    assert "'tulips' (line 2, line 5) and 'Tulips' (line 3)" in str(error.value)
    assert "write each label one way" in str(error.value)


@pytest.mark.parametrize("header, said", [
    ("path,labels,notes", "columns graft does not read: 'notes'."),
    ("path,labels,spilt", "'spilt' (split?)"),
    (",path,labels", "'' (pandas' index: write the file with index=False)"),
])
def test_unknown_columns_are_named_with_the_expected_ones(tmp_path, make_image, header, said):
    images(tmp_path, make_image)
    row = {"path,labels,notes": "img/00.png,cat,x", "path,labels,spilt": "img/00.png,cat,val", ",path,labels": "0,img/00.png,cat"}
    with pytest.raises(DataError, match="graft does not read") as error:
        find_data(write(tmp_path / "data.csv", [header, row[header]]), task="auto")
    assert said in str(error.value) and "graft reads a path (path, file_name" in str(error.value)
    assert "labels, classes, categories, tags) and optionally split" in str(error.value)


def test_unknown_jsonl_keys_and_lines_that_are_not_objects(tmp_path, make_image):
    images(tmp_path, make_image)
    file = write(tmp_path / "data.jsonl", ['{"path": "img/00.png", "labels": ["cat"], "score": 1}'])
    with pytest.raises(DataError, match=r"keys graft does not read: 'score' \(line 1\)"):
        find_data(file, task="auto")
    file = write(tmp_path / "data.jsonl", ['{"path": "img/00.png", "labels": ["cat"]}', "img/01.png cat"])
    with pytest.raises(DataError, match=r"data.jsonl line 2 is not JSON \(Expecting value\)"):
        find_data(file, task="auto")
    file = write(tmp_path / "data.jsonl", ['["img/00.png", "cat"]'])
    with pytest.raises(DataError, match="line 1 is not a JSON object"):
        find_data(file, task="auto")


def test_a_label_file_without_its_header_row(tmp_path, make_image):
    images(tmp_path, make_image)
    with pytest.raises(DataError, match="has no header row") as error:
        find_data(write(tmp_path / "data.csv", ["img/00.png,cat", "img/01.png,dog"]), task="auto")
    assert "(img/00.png,cat)" in str(error.value) and "path,labels (several)" in str(error.value)


def test_rows_without_labels_bad_splits_and_bad_lists(tmp_path, make_image):
    images(tmp_path, make_image)
    rows = [json.dumps(row) for row in (
        {"path": "img/00.png", "labels": ["cat"], "split": "train"},
        {"path": "img/01.png", "labels": "", "split": "train"},
        {"path": "img/02.png", "labels": ["cat"], "split": "holdout"},
        {"path": "img/03.png", "labels": [["cat"]], "split": "val"},
        {"path": "img/04.png", "split": "val"},
        {"path": "img/05.png", "labels": "owl"},
    )]
    with pytest.raises(DataError, match="has rows graft cannot use") as error:
        find_data(write(tmp_path / "data.jsonl", rows), task="auto")
    message = str(error.value)
    assert ("line 2: empty label; line 3: split 'holdout' is not train, val or test; line 4: the list [['cat']] holds "
            "something other than labels; line 5: empty label; line 6: split '' is not train, val or test") in message
    assert "([] for an image with none of them)" in message


def test_missing_files_in_a_jsonl_file(tmp_path, make_image):
    images(tmp_path, make_image)
    rows = [json.dumps({"path": "img/00.png", "labels": ["cat"]}), json.dumps({"path": "img/gone.png", "labels": ["dog"]})]
    with pytest.raises(DataError, match="lists 1 file that do not exist: line 2: img/gone.png") as error:
        find_data(write(tmp_path / "data.jsonl", rows), task="auto")
    assert f"read from the JSONL file's folder, {tmp_path}" in str(error.value)


def test_imagefolder_metadata_must_be_one_a_folder_and_in_every_split(tmp_path, make_image):
    imagefolder(tmp_path, make_image, {"train": 4, "val": 2})
    (tmp_path / "val" / "metadata.jsonl").rename(tmp_path / "val" / "notes.jsonl")
    with pytest.raises(DataError, match="val has no metadata file, but train/ has one"):
        find_data(tmp_path, task="auto")
    write(tmp_path / "train" / "metadata.csv", ["file_name,label", "000.png,cat"])
    with pytest.raises(DataError, match="both metadata.csv and metadata.jsonl; keep one"):
        find_data(tmp_path, task="auto")


def test_unreadable_images_are_skipped_and_a_label_left_without_images_refused(tmp_path, make_image):
    images(tmp_path, make_image)
    (tmp_path / "img" / "00.png").write_bytes(b"not a png")
    rows = ["path,labels"] + [f"img/{n}.png,{' '.join(t)}" for n, t in TAGS.items()] + ["notes.txt,cat"]
    (tmp_path / "notes.txt").write_text("x")
    splits = find_data(write(tmp_path / "data.csv", rows), task="auto")
    assert {s.path.name: s.reason.split(" (")[0].split(";")[0] for s in splits.skipped} == {
        "notes.txt": "not an image", "00.png": "not an image file Pillow can read"}
    assert "2 files skipped" in splits.describe() and len(every_sample(splits)) == 11
    for name in ("02", "04", "05", "06", "09", "11"):
        (tmp_path / "img" / f"{name}.png").write_bytes(b"")
    with pytest.raises(DataError, match="Class 'owl' has no images in the rows of .* labelled 'owl' .its 6 images unreadable"):
        find_data(tmp_path / "data.csv", task="auto")


def test_a_label_with_one_image_cannot_be_split(tmp_path, make_image):
    images(tmp_path, make_image, ["a", "b", "c"])
    csv = write(tmp_path / "data.csv", ["path,labels", "img/a.png,cat dog", "img/b.png,cat", "img/c.png,cat"])
    with pytest.raises(DataError, match="Label 'dog' has only 1 image"):
        find_data(csv, task="auto")


def test_find_eval_data_of_multilabel_data(tmp_path, make_image):
    images(tmp_path, make_image)
    rows = ["path,labels,split"] + [f"img/{n}.png,{' '.join(t)},{'test' if int(n) > 8 else 'train'}" for n, t in TAGS.items()]
    csv = write(tmp_path / "data.csv", rows)
    samples, skipped = find_eval_data(csv, ["bird", *NAMES], task="auto")
    assert [s.path.stem for s in samples] == ["09", "10", "11"] and skipped == []
    assert [s.labels for s in samples] == [(3,), (1, 2), (1, 3)]
    with pytest.raises(DataError, match="labels the model does not know: owl"):
        find_eval_data(csv, ["cat", "dog"], task="auto")


# -- The stratified split ----------------------------------------------------------------------


def generated_targets(images: int, labels: int, seed: int) -> np.ndarray:
    """Labels from 4% to 45% of the images, the second one mostly with the first."""
    rng = np.random.default_rng(seed)
    targets = rng.random((images, labels)) < np.linspace(0.04, 0.45, labels)
    targets[:, 1] |= targets[:, 0] & (rng.random(images) < 0.7)
    return targets


@pytest.mark.parametrize("images, labels", [(300, 8), (1000, 20)])  # 2.1 and 4.9 labels per image
def test_each_label_keeps_its_share_in_val_where_a_random_split_drifts(images, labels):
    targets = generated_targets(images, labels, seed=0)
    share = targets.mean(axis=0)
    for seed in range(4):
        val = iterative_split(targets, 0.2, seed)
        random_val = np.zeros(images, dtype=bool)
        random_val[np.random.default_rng(seed).permutation(images)[: images // 5]] = True
        assert np.abs(targets[val].mean(axis=0) - share).max() <= 0.025
        assert np.abs(targets[val].sum(axis=0) - 0.2 * targets.sum(axis=0)).max() <= 2.5  # images off its share
        assert np.abs(targets[random_val].sum(axis=0) - 0.2 * targets.sum(axis=0)).max() > 3.5
        assert abs(val.sum() - images / 5) <= 0.05 * images / 5
        assert abs(targets[val].sum(axis=1).mean() - targets.sum(axis=1).mean()) < 0.15  # labels per image
        assert np.array_equal(val, iterative_split(targets, 0.2, seed))
    assert not np.array_equal(iterative_split(targets, 0.2, 0), iterative_split(targets, 0.2, 1))


def test_every_label_lands_in_train_and_val():
    rng = np.random.default_rng(0)
    targets = np.zeros((60, 30), dtype=bool)
    for label in range(30):  # 30 rare labels of 2 or 3 images each
        targets[rng.choice(60, size=2 + label % 2, replace=False), label] = True
    for seed in range(5):
        val = iterative_split(targets, 0.2, seed)
        assert targets[val].any(axis=0).all() and targets[~val].any(axis=0).all()


def test_find_data_splits_multilabel_data_stratified_and_seeded(tmp_path, make_image):
    targets = generated_targets(150, 6, seed=1)
    rows = ["path,labels"]
    for index, present in enumerate(targets):
        make_image(tmp_path / "img" / f"{index:03d}.png", size=(4, 4), seed=index)
        rows.append(f"img/{index:03d}.png,{' '.join(f'l{label}' for label in np.flatnonzero(present)) or '[]'}")
    csv = write(tmp_path / "data.csv", rows)
    splits = find_data(csv, task="auto", seed=4)
    assert splits.train == find_data(csv, task="auto", seed=4).train and splits.val != find_data(csv, task="auto").val
    assert "val is 20% of the images, stratified by label (iterative), seed 4" in splits.describe()
    for label, name in enumerate(splits.classes):
        assert abs(splits.counts("val")[name] - 0.2 * targets[:, label].sum()) <= 1.5


def test_a_label_file_per_split_beside_the_images(tmp_path, make_image):
    """tags-dev's layout: train.csv and test.csv in DATA, paths from DATA; val split from train."""
    images(tmp_path, make_image)
    names = list(TAGS)
    write(tmp_path / "train.csv", ["path,labels"] + [f"img/{n}.png,{' '.join(TAGS[n])}" for n in names[:9]])
    write(tmp_path / "test.csv", ["path,labels"] + [f"img/{n}.png,{' '.join(TAGS[n])}" for n in names[9:]])
    splits = find_data(tmp_path, task="auto", val_split=0.25)
    assert splits.task == "multilabel" and "train.csv" in splits.layout and "test.csv" in splits.layout
    assert {s.path.stem for s in splits.train + splits.val} == set(names[:9])
    assert label_sets(splits.test, splits.classes) == {n: set(TAGS[n]) for n in names[9:]}
    assert len(splits.val) >= 1  # no val.csv: val taken from train, stratified


def test_label_files_per_split_that_cannot_be_read_as_one_say_why(tmp_path, make_image):
    images(tmp_path, make_image)
    write(tmp_path / "test.csv", ["path,labels", "img/00.png,cat"])
    with pytest.raises(DataError, match="has test.csv but no train.csv"):
        find_data(tmp_path, task="auto")
    write(tmp_path / "train.csv", ["path,labels", "img/01.png,dog"])
    write(tmp_path / "train.jsonl", [json.dumps({"path": "img/02.png", "labels": ["owl"]})])
    with pytest.raises(DataError, match="two label files for train: train.csv and train.jsonl; keep one"):
        find_data(tmp_path, task="auto")


def test_class_folders_beside_a_stray_train_csv_are_still_class_folders(tmp_path, make_image):
    """A folder of split folders holding class folders stays that, whatever CSV lies beside them (a
    Kaggle download's train.csv of ids): only split folders without class folders take their labels
    from train.csv and test.csv."""
    for split, count in (("train", 6), ("test", 2)):
        for name in ("cat", "dog"):
            for index in range(count):
                make_image(tmp_path / split / name / f"{index}.png", size=(8, 8), seed=index)
    write(tmp_path / "train.csv", ["id,target", "1,0", "2,1"])
    splits = find_data(tmp_path, val_split=0.25)
    assert splits.classes == ["cat", "dog"] and len(splits.test) == 4 and "train.csv" not in splits.layout


# -- A label file beside class folders -----------------------------------------------------------


def class_folders(root: Path, make_image, per_class: int = 4) -> Path:
    """root/cat/0.png ... root/dog/3.png: a folder of class folders."""
    for offset, name in enumerate(("cat", "dog")):
        for index in range(per_class):
            make_image(root / name / f"{index}.png", size=(8, 8), seed=10 * offset + index)
    return root


def test_a_label_file_beside_class_folders_that_agree_with_it_is_read_and_the_summary_says_so(tmp_path, make_image):
    """DATA/train.csv beside DATA/cat/ and DATA/dog/: the file gives the labels (it may give several: each
    image's folder is one of them), and the summary names both sources, not the file alone."""
    root = class_folders(tmp_path, make_image)
    write(root / "train.csv", ["path,labels"] + [f"{name}/{index}.png,{name}{' dog' if index == 0 else ''}"
                                                 for name in ("cat", "dog") for index in range(4)])
    splits = find_data(root, task="auto", val_split=0.25)
    assert splits.task == "multilabel" and label_sets(every_sample(splits), splits.classes)["0"] >= {"dog"}
    assert "labels from train.csv, and the class folders cat/, dog/ beside it agree" in splits.layout
    assert "labels from train.csv, and the class folders" in splits.describe()


@pytest.mark.parametrize("file", ["train.csv", "metadata.jsonl"])
def test_a_label_file_beside_class_folders_that_disagree_with_it_is_refused_naming_both(tmp_path, make_image, file):
    """graft read the label file and ignored the class folders in silence, so that cat/0.png labelled
    dog in the file trained as a dog. Which source is right cannot be known: graft names both, the
    images on which they disagree, and the ways to pick one."""
    root = class_folders(tmp_path, make_image)
    listed = [(f"{name}/{index}.png", "dog" if (name, index) == ("cat", 0) else name)
              for name in ("cat", "dog") for index in range(4)]
    if file == "train.csv":
        write(root / file, ["path,label"] + [f"{path},{label}" for path, label in listed])
    else:
        write(root / file, [json.dumps({"file_name": path, "label": label}) for path, label in listed])
    with pytest.raises(DataError) as error:
        find_data(root, task="auto")
    message = str(error.value)
    assert f"{root} holds class folders (cat/, dog/) and a label file ({file})" in message
    line = 2 if file == "train.csv" else 1  # under the CSV's header; the JSONL's first line
    assert f"{file} line {line} labels cat/0.png 'dog', but it lies in cat/" in message
    assert f"graft train {root / file}" in message and f"move {file} out of {root}" in message
    assert find_data(root / file, task="auto").classes == ["cat", "dog"]  # the file itself: the user's choice


def test_images_in_class_folders_that_the_label_file_beside_them_leaves_out_are_refused(tmp_path, make_image):
    """The file listed 2 of each class folder's 4 images and graft trained on those 4 in silence."""
    root = class_folders(tmp_path, make_image)
    write(root / "train.csv", ["path,label"] + [f"{name}/{index}.png,{name}" for name in ("cat", "dog") for index in (0, 1)])
    write(root / "test.csv", ["path,label", "cat/2.png,cat", "dog/2.png,dog"])  # listed in another split's file
    with pytest.raises(DataError) as error:
        find_data(root, task="auto")
    message = str(error.value)
    assert "2 images in the class folders are in no label file (cat/3.png, dog/3.png)" in message
    assert "train.csv, test.csv" in message and f"move train.csv and test.csv out of {root}" in message


def test_folders_named_unlike_any_label_beside_a_label_file_only_hold_its_images(tmp_path, make_image):
    """Hugging Face's imagefolder keeps the images in any folders (images/, or train/ and test/ as
    tags-dev): folders no label names are not class folders, and nothing is compared."""
    images(tmp_path, make_image)
    make_image(tmp_path / "img" / "unlisted.png", size=(8, 8))
    write(tmp_path / "metadata.jsonl", [json.dumps({"file_name": f"img/{name}.png", "labels": labels})
                                        for name, labels in TAGS.items()])
    splits = find_data(tmp_path, task="auto")
    assert splits.classes == NAMES and "class folders" not in splits.layout


def test_a_file_graft_cannot_read_beside_class_folders_says_how_to_train_on_the_folders(tmp_path, make_image):
    """A Kaggle download's train.csv (id,target) beside the class folders: the column error alone did
    not say that moving the file out trains on the class folders."""
    root = class_folders(tmp_path, make_image)
    write(root / "train.csv", ["id,target", "1,0", "2,1"])
    with pytest.raises(DataError) as error:
        find_data(root)
    message = str(error.value)
    assert "needs a header row with columns path,label" in message
    assert f"to train on the class folders cat/, dog/ beside it, move train.csv out of {root}" in message


def test_class_folders_inside_the_split_folders_of_an_imagefolder_are_compared_with_their_metadata(tmp_path, make_image):
    """Hugging Face's imagefolder with train/metadata.jsonl beside train/cat/ and train/dog/ (and val/ alike):
    each split's metadata is compared with the class folders beside it."""
    for split in ("train", "val"):
        class_folders(tmp_path / split, make_image, per_class=3)
        write(tmp_path / split / "metadata.jsonl", [json.dumps({"file_name": f"{name}/{index}.png", "label": name})
                                                    for name in ("cat", "dog") for index in range(3)])
    splits = find_data(tmp_path, task="auto")
    assert len(splits.train) == len(splits.val) == 6 and "val/cat/, val/dog/ beside them agree" in splits.layout
    write(tmp_path / "val" / "metadata.jsonl", [json.dumps({"file_name": f"{name}/{index}.png", "label": "cat"})
                                                for name in ("cat", "dog") for index in range(3)])
    with pytest.raises(DataError, match="metadata.jsonl line 4 labels val/dog/0.png 'cat', but it lies in val/dog/"):
        find_data(tmp_path, task="auto")
