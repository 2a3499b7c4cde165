"""Similar images (graft.similar, `graft similar`): the training images nearest to an image, by embedding.

Features come from EfficientNet-Lite0 with its real ImageNet weights at 32 px, as the tiny runs use.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import COLOURS, FAST, make_image
from graft.errors import GraftError
from graft.similar import similar
from test_cli import run_main

IMG_SIZE = 32


@pytest.fixture(scope="module")
def data_with_a_shifted_copy(tmp_path_factory):
    """train/ and val/ of three colour classes (6 and 2 generated images each, all different) and, in
    train/red, `shifted.png`: train/red/000.png moved 2 px right and down."""
    root = tmp_path_factory.mktemp("similar-data")
    seed = 0
    for split, count in (("train", 6), ("val", 2)):
        for name, colour in COLOURS.items():
            for index in range(count):
                seed += 1
                make_image(root / split / name / f"{index:03d}.png", color=colour, seed=seed)
    original = root / "train" / "red" / "000.png"
    pixels = np.asarray(Image.open(original))
    Image.fromarray(np.roll(pixels, (2, 2), axis=(0, 1))).save(root / "train" / "red" / "shifted.png")
    return root


def test_from_a_data_folder_the_image_itself_comes_first_then_its_shifted_copy(data_with_a_shifted_copy):
    root = data_with_a_shifted_copy
    query = root / "train" / "red" / "000.png"
    [answer] = similar(root, [query], count=4, img_size=IMG_SIZE, workers=0, progress=False)
    assert answer.image == query
    first, second, *rest = answer.matches
    assert (first.rank, first.path, first.label) == (1, query, "red") and first.similarity > 0.99
    assert second.path == root / "train" / "red" / "shifted.png", [(m.path.name, m.similarity) for m in answer.matches]
    assert [match.rank for match in answer.matches] == [1, 2, 3, 4]
    similarities = [match.similarity for match in answer.matches]
    assert similarities == sorted(similarities, reverse=True) and second.similarity > rest[0].similarity
    assert all("val" not in match.path.parts for match in answer.matches)  # the training images only


def test_an_image_outside_the_data_finds_the_training_image_it_copies(data_with_a_shifted_copy, tmp_path):
    blue = data_with_a_shifted_copy / "train" / "blue" / "003.png"
    outside = tmp_path / "query.jpg"
    Image.open(blue).save(outside, quality=80)  # re-encoded: not the same file
    [answer] = similar(data_with_a_shifted_copy, [outside], count=2, img_size=IMG_SIZE, workers=0, progress=False)
    assert answer.matches[0].path == blue and answer.matches[0].label == "blue"


def test_from_a_run_folder_its_backbone_and_cached_training_features(linear_probe_run, tiny_dataset, monkeypatch):
    """A run's own backbone and size, its training split's features read back from training's cache:
    only the query image is extracted."""
    import graft.features.extract as extract

    calls = []
    original = extract.extract_into

    def counted(backbone, dataset, out, **options):
        calls.append(len(dataset))
        return original(backbone, dataset, out, **options)

    monkeypatch.setattr(extract, "extract_into", counted)
    query = tiny_dataset / "train" / "green" / "005.png"
    [answer] = similar(linear_probe_run.run_dir, [query], count=3, progress=False)
    assert sum(calls) <= 1
    assert answer.matches[0].path == query and answer.matches[0].label == "green"
    assert answer.matches[0].similarity > 0.99
    assert {match.path.parts[-3] for match in answer.matches} == {"train"}


def test_graft_similar_prints_each_image_s_neighbours_and_json(data_with_a_shifted_copy, capsys, monkeypatch):
    root = data_with_a_shifted_copy
    query = root / "train" / "red" / "000.png"
    code, output = _main(["similar", root, query, "--count", "2", "--img-size", str(IMG_SIZE), "--workers", "0"],
                         capsys, monkeypatch)
    assert code == 0, output
    assert "Training images most like" in output and "shifted.png" in output and "1.000" in output
    code, output = _main(["similar", root, query, root / "train" / "green" / "001.png", "-k", "1", "--img-size",
                          str(IMG_SIZE), "--workers", "0", "--json"], capsys, monkeypatch)
    assert code == 0, output
    answers = json.loads(output)
    assert [len(answer["matches"]) for answer in answers] == [1, 1]
    assert answers[1]["matches"][0] == {"rank": 1, "path": str(root / "train" / "green" / "001.png"),
                                        "label": "green", "similarity": answers[1]["matches"][0]["similarity"]}


def test_bad_input_is_a_clear_error_naming_the_file(linear_probe_run, data_with_a_shifted_copy, tmp_path, capsys,
                                                    monkeypatch):
    root = data_with_a_shifted_copy
    query = root / "train" / "red" / "000.png"
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    gone = _run_whose_data_moved_away(tmp_path)
    cases = [
        (["similar", root, tmp_path / "missing.png"], "missing.png does not exist"),
        (["similar", root, broken], "broken.png cannot be read as an image"),
        (["similar", root, tmp_path], "is not a file"),
        (["similar", gone, query], "moved-away"),
        (["similar", linear_probe_run.run_dir, query, "--backbone", "resnet18"], "leave out --backbone"),
        (["similar", root, query, "--count", "0"], "--count 0"),
        (["similar", tmp_path / "nowhere", query], "nowhere does not exist"),
    ]
    for args, message in cases:
        code, output = run_main(args, capsys, monkeypatch)
        assert code == 2, output
        assert message in output and "Traceback" not in output, output
    with pytest.raises(GraftError, match="moved-away"):
        similar(gone, [query], progress=False)


def _run_whose_data_moved_away(tmp_path):
    """A tiny run whose training data (tmp_path/moved-away) was deleted after training."""
    import graft

    data = tmp_path / "moved-away"
    for name, colour in COLOURS.items():
        for index in range(5):
            make_image(data / name / f"{index}.png", color=colour, seed=50 + 10 * index + len(name))
    run = graft.train(data, strategy="linear-probe", out=tmp_path / "runs", name="gone", **FAST).run_dir
    shutil.rmtree(data)
    return run


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


def test_the_features_go_to_the_cache_dir_given(data_with_a_shifted_copy, fresh_cache):
    from graft.features import FeatureCache

    query = data_with_a_shifted_copy / "train" / "green" / "002.png"
    [answer] = similar(data_with_a_shifted_copy, [query], count=1, img_size=IMG_SIZE, workers=0, progress=False,
                       cache_dir=fresh_cache)
    assert answer.matches[0].path == query
    counts = sorted(entry.count for entry in FeatureCache(fresh_cache / "features").entries())
    assert counts == [1, 19]  # the query's features and the 19 training images', nothing else
