"""What to label next (graft.suggest, `graft suggest`): on generated embeddings, and on a tiny real run."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from conftest import make_image
from graft.errors import GraftError
from graft.suggest import METHODS, suggest
from test_cli import run_main

CLASSES = ["a", "b", "c"]


def _unit_centred(rows: np.ndarray, train: np.ndarray) -> np.ndarray:
    centred = rows - train.mean(axis=0)
    return centred / np.linalg.norm(centred, axis=1, keepdims=True)


def _probabilities(margins: np.ndarray) -> np.ndarray:
    """Rows over three classes whose top two differ by `margins`: class a first, b second."""
    rest = 0.1
    second = (1 - rest - margins) / 2
    return np.stack([second + margins, second, np.full_like(margins, rest)], axis=1)


def _blobs(rng: np.random.Generator, groups: int, copies: int, dim: int = 64) -> np.ndarray:
    """`groups` random points, each with `copies` near copies of it (tiny noise)."""
    centres = rng.normal(size=(groups, dim))
    return np.repeat(centres, copies, axis=0) + rng.normal(scale=0.01, size=(groups * copies, dim))


@pytest.mark.parametrize("method", METHODS)
def test_no_two_suggestions_are_near_duplicates(method):
    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 64))
    unlabelled = _blobs(rng, groups=8, copies=5)  # 40 images, 8 distinct ones
    margins = rng.uniform(0, 0.5, len(unlabelled))
    found = suggest(train, unlabelled, _probabilities(margins), classes=CLASSES, count=20, method=method)
    picked = _unit_centred(unlabelled[[item.index for item in found]], train)
    similarity = picked @ picked.T
    assert len(found) == 8  # one of each group, however many were asked
    assert (similarity[~np.eye(len(found), dtype=bool)] < 0.9).all()
    assert found.near_copies == 32 and any("near copies" in note for note in found.notes)


def test_a_near_copy_of_a_labelled_image_is_never_suggested():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(30, 64))
    unlabelled = np.vstack([train[:5] + rng.normal(scale=0.01, size=(5, 64)), rng.normal(size=(10, 64))])
    margins = np.r_[np.zeros(5), np.full(10, 0.5)]  # the copies are the most uncertain
    found = suggest(train, unlabelled, _probabilities(margins), classes=CLASSES, count=15, method="margin")
    assert sorted(item.index for item in found) == list(range(5, 15))


@pytest.mark.parametrize("method", ["margin-clusters", "margin", "margin-coverage"])
def test_prefers_uncertain_images_and_says_so(method):
    rng = np.random.default_rng(2)
    train = rng.normal(size=(50, 64))
    centres = rng.normal(size=(10, 64))
    unlabelled = np.repeat(centres, 4, axis=0) + rng.normal(scale=0.4, size=(40, 64))  # 10 groups of 4 similar images
    margins = np.where(np.arange(40) % 4 == 1, 0.02, 0.9)  # in each group one close call
    found = suggest(train, unlabelled, _probabilities(margins), classes=CLASSES, count=10, method=method)
    assert sorted(item.index for item in found) == list(range(1, 40, 4))
    for item in found:
        assert item.reason.startswith("uncertain: a 0.46 vs b 0.44"), item.reason
        assert item.reasons[0] == "uncertain"
    assert [item.rank for item in found] == list(range(1, 11))


def test_an_image_unlike_the_training_images_is_suggested_and_said_to_be():
    rng = np.random.default_rng(3)
    train = _blobs(rng, groups=6, copies=10) + rng.normal(scale=0.3, size=(60, 64))  # six groups of similar images
    familiar = train[:20] + rng.normal(scale=0.3, size=(20, 64))  # beside training images
    strange = 3 * rng.normal(size=(3, 64))  # in no group, and far from each other
    unlabelled = np.vstack([familiar, strange])
    margins = np.full(23, 0.6)  # no image is a closer call than another
    found = suggest(train, unlabelled, _probabilities(margins), classes=CLASSES, count=3, method="margin-coverage")
    assert sorted(item.index for item in found) == [20, 21, 22]
    for item in found:
        assert "unlike the training images" in item.reason and "unlike" in item.reasons
        assert item.unlikeness > found.unlike_threshold


def test_every_suggestion_has_a_reason_and_the_csv_holds_them():
    rng = np.random.default_rng(4)
    train = rng.normal(size=(30, 16))
    unlabelled = rng.normal(size=(25, 16))
    found = suggest(train, unlabelled, rng.dirichlet(np.ones(3), 25), classes=CLASSES, count=25, method="coverage",
                    paths=[f"img{index}.jpg" for index in range(25)])
    assert len(found) == 25 and all(item.reason for item in found)
    assert {reason for item in found for reason in item.reasons} <= {"uncertain", "unlike", "coverage"}
    rows = list(csv.DictReader(found.csv_text().splitlines()))
    assert [row["path"] for row in rows] == [item.path for item in found]
    assert [row["reason"] for row in rows] == [item.reason for item in found]
    distances = [item.distance for item in found]  # k-center greedy: each pick no farther than the one before
    assert all(later <= earlier + 1e-6 for earlier, later in zip(distances, distances[1:]))


@pytest.mark.parametrize(("change", "message"), [
    (dict(count=0), "--count 0"),
    (dict(count=2.5), "--count 2.5"),
    (dict(method="best"), "Unknown way of suggesting"),
    (dict(features=np.zeros((4, 9))), "9 values per image"),
    (dict(probabilities=np.full((3, 3), 1 / 3)), "4 unlabelled embeddings but 3 rows"),
    (dict(classes=["a", "b"]), "2 class names"),
    (dict(features=np.full((4, 8), np.nan)), "not finite"),
])
def test_bad_input_is_a_clear_error(change, message):
    arguments = dict(train_features=np.eye(8)[:6], features=np.ones((4, 8)), probabilities=np.full((4, 3), 1 / 3),
                     classes=CLASSES, count=2)
    with pytest.raises(GraftError, match=message):
        suggest(**{**arguments, **change})


def test_no_unlabelled_images_give_no_suggestion():
    found = suggest(np.eye(8)[:6], np.zeros((0, 8)), np.zeros((0, 3)), classes=CLASSES, count=5)
    assert len(found) == 0 and found.images == 0


# -- graft suggest on a real run ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def unlabelled(tiny_dataset, tmp_path_factory):
    """Nine unlabelled images: purple and yellow ones (between two classes), red, green and blue ones,
    an exact copy of one purple image, and a copy of a training image."""
    folder = tmp_path_factory.mktemp("unlabelled")
    colours = {"purple": (120, 30, 120), "yellow": (120, 120, 30), "red": (200, 30, 30), "green": (30, 180, 40),
               "blue": (30, 40, 200)}
    for index, (name, colour) in enumerate(colours.items()):
        for number in range(2 if name in ("purple", "yellow") else 1):
            make_image(folder / f"{name}{number}.png", color=colour, seed=1000 + 10 * index + number)
    shutil.copy(folder / "purple0.png", folder / "purple0-copy.png")
    training = next((tiny_dataset / "train" / "red").iterdir())
    shutil.copy(training, folder / "from-training.png")
    return folder


def test_graft_suggest_writes_the_csv_and_refuses_to_overwrite_it(linear_probe_run, unlabelled, tmp_path, capsys,
                                                                   monkeypatch):
    out = tmp_path / "next.csv"
    code, output = _main(["suggest", linear_probe_run.run_dir, unlabelled, "--count", "9", "--csv", out], capsys,
                         monkeypatch)
    assert code == 0, output
    rows = list(csv.DictReader(out.open()))
    names = [row["path"].rsplit("/", 1)[-1] for row in rows]
    assert [row["rank"] for row in rows] == [str(rank) for rank in range(1, len(rows) + 1)]
    assert all(row["reason"] for row in rows)
    assert not {"purple0.png", "purple0-copy.png"} <= set(names)  # never both of two identical images
    assert "from-training.png" not in names  # a copy of a labelled image
    assert len(rows) <= 7 and "near copies" in output
    assert "rank" in output and "reason" in output and names[0] in output
    before = out.read_bytes()
    code, output = run_main(["suggest", linear_probe_run.run_dir, unlabelled, "--csv", out], capsys, monkeypatch)
    assert code == 2 and "--overwrite" in output and "Traceback" not in output
    assert out.read_bytes() == before


def _main(args, capsys, monkeypatch):
    """main() for a command that succeeds (no SystemExit) or fails (exit status)."""
    from graft.cli.main import main

    monkeypatch.setattr("sys.argv", ["graft", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_graft_suggest_refuses_bad_input_clearly(linear_probe_run, unlabelled, tiny_dataset, tmp_path, capsys,
                                                 monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    cases = [
        (["suggest", linear_probe_run.run_dir, empty], "No unlabelled images to rank"),
        (["suggest", tiny_dataset, unlabelled], "graft.json"),
        (["suggest", unlabelled / "red0.png", unlabelled], "is not a run folder"),
        (["suggest", linear_probe_run.run_dir, unlabelled, "--count", "0"], "--count 0"),
        (["suggest", linear_probe_run.run_dir, unlabelled, "--method", "best"], "Unknown way of suggesting"),
    ]
    for args, message in cases:
        code, output = run_main(args, capsys, monkeypatch)
        assert code == 2, output
        assert message in output and "Traceback" not in output, output


def test_suggest_for_run_reads_every_feature_from_the_cache(linear_probe_run, unlabelled, monkeypatch):
    """The labelled images' features are the ones training cached, and a second call on the same
    unlabelled images extracts nothing: a labelling round costs no forward pass but the new images'."""
    import graft.features.extract as extract
    from graft.suggest import suggest_for_run

    calls = []
    original = extract.extract_into

    def counted(backbone, dataset, out, **options):
        calls.append(len(dataset))
        return original(backbone, dataset, out, **options)

    monkeypatch.setattr(extract, "extract_into", counted)
    first = suggest_for_run(linear_probe_run.run_dir, [unlabelled], count=3, progress=False)
    assert sum(calls) <= 9  # the unlabelled images at most: train, val and test came from training's cache
    calls.clear()
    second = suggest_for_run(linear_probe_run.run_dir, [unlabelled], count=3, progress=False)
    assert calls == []
    assert [item.path for item in second] == [item.path for item in first]


# -- multi-label runs --------------------------------------------------------------------------------


def test_multilabel_uncertainty_is_the_nearest_threshold_and_no_two_picks_are_near_duplicates():
    """Sigmoid probabilities, each class against its own threshold: the least certain image has a
    class closest to its threshold, and it is said so; no two suggestions are near-duplicates."""
    rng = np.random.default_rng(3)
    train = rng.normal(size=(40, 64))
    rows = _blobs(rng, groups=6, copies=3)
    thresholds = np.array([0.5, 0.3, 0.7])
    probabilities = np.tile([0.9, 0.05, 0.95], (len(rows), 1))  # far from every threshold ...
    probabilities[7] = [0.9, 0.32, 0.95]  # ... but image 7's b is 0.02 from its threshold
    found = suggest(train, rows, probabilities, classes=CLASSES, count=6, method="margin", thresholds=thresholds)
    assert found.items[0].index == 7 and "uncertain" in found.items[0].reasons
    assert found.items[0].reason.startswith("uncertain: b 0.32 against its threshold 0.30")
    assert found.items[0].margin == pytest.approx(0.02, abs=1e-6)
    unit = _unit_centred(rows, train)
    picked = [item.index for item in found]
    assert len(picked) == 6 and all(item.reason for item in found)
    similarity = unit[picked] @ unit[picked].T
    assert (similarity[~np.eye(len(picked), dtype=bool)] < 0.9).all()
    with pytest.raises(GraftError, match="2 thresholds"):
        suggest(train, rows, probabilities, classes=CLASSES, count=2, thresholds=[0.5, 0.5])


@pytest.fixture(scope="module")
def multilabel_run(tiny_multilabel, tmp_path_factory):
    import graft
    from conftest import FAST

    return graft.train(tiny_multilabel, strategy="linear-probe", out=tmp_path_factory.mktemp("ml-suggest"), name="ml",
                       **FAST)


def test_graft_suggest_ranks_images_for_a_multilabel_run(multilabel_run, tmp_path, capsys, monkeypatch):
    import json

    from PIL import Image

    rng = np.random.default_rng(7)
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for index in range(8):  # grey and noisy with a coloured square, as tiny_multilabel's images
        pixels = np.full((40, 40, 3), 128.0) + rng.normal(0, 20, (40, 40, 3))
        x, y = rng.integers(0, 20, 2)
        pixels[y:y + 20, x:x + 20] = [(200, 30, 30), (30, 180, 40), (30, 40, 200), (120, 30, 120)][index % 4]
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"u{index}.png")
    shutil.copy(folder / "u0.png", folder / "u0-copy.png")
    code, output = _main(["suggest", multilabel_run.run_dir, folder, "--count", "9", "--json"], capsys, monkeypatch)
    assert code == 0, output
    answer = json.loads(output)
    names = [item["path"].rsplit("/", 1)[-1] for item in answer["suggestions"]]
    assert answer["images"] == 9 and 1 <= len(names) <= 8
    assert not {"u0.png", "u0-copy.png"} <= set(names)  # never both of two identical images
    assert all(item["reason"] for item in answer["suggestions"])
    classes = list(multilabel_run.record.classes)
    assert all(item["top"] in classes and 0 <= item["margin"] <= 1 for item in answer["suggestions"])
    code, output = run_main(["suggest", multilabel_run.run_dir, folder, "--label", "--labels", tmp_path / "l.csv"],
                            capsys, monkeypatch)
    assert code == 2 and "multi-label" in output and "Traceback" not in output
