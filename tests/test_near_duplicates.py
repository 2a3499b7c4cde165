"""Near-identical images within one split (graft.audit's within-split check, `graft audit --redundant`).

Real photos (the embedded CIFAR-10 sample, enlarged to 96 px) and altered copies of some of them, as
consecutive video frames differ: shifted a few pixels, slightly cropped, brighter, re-encoded. Features
from EfficientNet-Lite0 with its real ImageNet weights at a small input size.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from graft.audit import NEAR_DUPLICATE_THRESHOLD, audit
from graft.audit.checks import best_matches, redundant_rows
from test_cli import run_main

IMG_SIZE = 64
CIFAR = Path(str(files("graft") / "demo_data/cifar10-sample"))
CLASSES = ("airplane", "cat", "ship")


@pytest.fixture(autouse=True, scope="module")
def own_feature_cache(tmp_path_factory):
    """This file's features in a cache of their own: other files count the entries of the shared one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRAFT_CACHE", str(tmp_path_factory.mktemp("near-duplicates-cache")))
        yield


def _photos(root: Path) -> Path:
    """train 8 and val 3 distinct CIFAR photos per class, enlarged to 96 px."""
    for name in CLASSES:
        photos = sorted((CIFAR / "train" / name).iterdir())
        for split, chosen in (("train", photos[:8]), ("val", photos[8:11])):
            (root / split / name).mkdir(parents=True)
            for photo in chosen:
                Image.open(photo).resize((96, 96), Image.BICUBIC).save(root / split / name / photo.name, quality=95)
    return root


def _frame(original: Path, target: Path, *, shift: int, brightness: float) -> Path:
    """A next frame of `original` (96 px): `shift` px cut off its top and left edges and resized back
    (the camera moved and zoomed a little), brightness times `brightness`, saved as JPEG."""
    moved = Image.open(original).convert("RGB").crop((shift, shift, 96, 96)).resize((96, 96), Image.BICUBIC)
    ImageEnhance.Brightness(moved).enhance(brightness).save(target, quality=85)
    return target


@pytest.fixture(scope="module")
def distinct(tmp_path_factory) -> Path:
    return _photos(tmp_path_factory.mktemp("distinct"))


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> tuple[Path, dict[Path, list[Path]]]:
    """The distinct photos plus frames: two of train/cat/0000.jpg, one of train/ship/0003.jpg and one of
    a val photo. Returns the folder and {photo: its frames}."""
    root = _photos(tmp_path_factory.mktemp("frames"))
    cat, ship = root / "train" / "cat" / "0000.jpg", root / "train" / "ship" / "0003.jpg"
    plane = sorted((root / "val" / "airplane").iterdir())[0]
    made = {
        cat: [_frame(cat, root / "train" / "cat" / "0000_next.jpg", shift=2, brightness=1.1),
              _frame(cat, root / "train" / "cat" / "0000_next2.jpg", shift=3, brightness=0.92)],
        ship: [_frame(ship, root / "train" / "ship" / "0003_next.jpg", shift=2, brightness=1.05)],
        plane: [_frame(plane, root / "val" / "airplane" / "zz_next.jpg", shift=1, brightness=0.95)],
    }
    return root, made


def _audit(data, **options):
    return audit(data, img_size=IMG_SIZE, workers=0, progress=False, **options)


def test_near_copies_within_a_split_are_grouped_under_their_photo(frames):
    root, made = frames
    result = _audit(root)
    groups = {group.kept: group for group in result.near_duplicates}
    assert set(groups) == set(made), [(g.kept.name, [p.name for p in g.redundant], g.similarities)
                                      for g in result.near_duplicates]
    for photo, copies in made.items():
        group = groups[photo]
        assert sorted(group.redundant) == sorted(copies) and group.split == photo.parts[-3]
        assert all(NEAR_DUPLICATE_THRESHOLD <= value <= 1 for value in group.similarities)
    assert result.near_duplicates[0].kept == root / "train" / "cat" / "0000.jpg"  # the largest group first
    assert sorted(result.redundant()) == sorted(path for copies in made.values() for path in copies)
    verdict = result.verdicts()["near_duplicates"]
    assert "2 groups of near-identical training images (3 images could be dropped)" in verdict
    assert "1 group of near-identical val images (1 image could be dropped)" in verdict
    assert result.summary().endswith(" 3 groups of near-identical images within a split (4 images could be dropped).")
    assert result.findings == len(result.duplicates) + len(result.imbalance.flagged) + len(result.mislabelled)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["settings"]["near_duplicate_threshold"] == NEAR_DUPLICATE_THRESHOLD
    assert {group["kept"] for group in data["near_duplicates"]} == {str(photo) for photo in made}
    assert "Near-identical images" in result.to_markdown()


def test_distinct_photos_form_no_group(distinct):
    result = _audit(distinct)
    assert result.near_duplicates == [] and result.redundant() == []
    assert result.verdicts()["near_duplicates"].startswith("No near-identical images within train or val")


def test_grouping_in_blocks_equals_the_grouping_at_once():
    """Each row repeats the first kept row it is near, in row order, whatever the blocks: 12 points with
    4 near copies each, shuffled."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 32))
    rows = (np.repeat(centres, 5, axis=0) + rng.normal(scale=0.02, size=(60, 32)))[rng.permutation(60)]
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    whole = redundant_rows(rows.astype(np.float32), threshold=0.9)
    assert (whole[0] < 0).sum() == 12
    for block, reference_block in ((7, 3), (1, 1), (60, 100)):
        keeper, similarity = redundant_rows(rows.astype(np.float16), threshold=0.9, block=block,
                                            reference_block=reference_block)
        assert np.array_equal(keeper, whole[0])
        assert np.allclose(similarity, whole[1], atol=2e-3)
    kept = whole[0]
    for row in np.flatnonzero(kept >= 0):  # each repeats an earlier kept row
        assert kept[row] < row and kept[kept[row]] == -1 and float(rows[row] @ rows[kept[row]]) >= 0.9


def test_best_matches_top_ranks_as_a_stable_sort_of_the_whole_matrix():
    rng = np.random.default_rng(1)
    queries, reference = rng.normal(size=(30, 16)).astype(np.float32), rng.normal(size=(40, 16)).astype(np.float32)
    whole = queries @ reference.T
    for reference_block in (40, 9, 1):
        index, best = best_matches(queries, reference, block=7, reference_block=reference_block, top=5)
        assert np.array_equal(index, np.argsort(-whole, axis=1, kind="stable")[:, :5])
        assert np.allclose(best, -np.sort(-whole, axis=1)[:, :5], atol=1e-5)
    tied = np.ones((3, 4), dtype=np.float32)
    assert best_matches(tied, tied, reference_block=1, top=2)[0].tolist() == [[0, 1]] * 3
    assert best_matches(tied, tied, top=10)[0].shape == (3, 3)  # no more columns than reference rows
    assert best_matches(queries, reference, top=1)[0][:, 0].tolist() == best_matches(queries, reference)[0].tolist()


def test_graft_audit_redundant_lists_all_but_one_per_group_and_refuses_a_foreign_file(frames, tmp_path, capsys,
                                                                                      monkeypatch):
    from graft.cli.main import main

    root, made = frames
    target = tmp_path / "redundant.txt"
    monkeypatch.setattr("sys.argv", ["graft", "audit", str(root), "--img-size", str(IMG_SIZE), "--workers", "0",
                                     "--redundant", str(target)])
    try:
        main()
    except SystemExit as exit_info:
        assert exit_info.code == 0
    output = capsys.readouterr().out
    listed = target.read_text().splitlines()
    assert sorted(listed) == sorted(str(path) for copies in made.values() for path in copies)
    assert "Near-identical images" in output and "4 near-identical images that could be dropped" in output
    assert all(Path(line).exists() for line in listed)  # listed, never deleted

    foreign = tmp_path / "notes.txt"
    foreign.write_text("mine")
    code, output = run_main(["audit", root, "--img-size", IMG_SIZE, "--workers", "0", "--redundant", foreign],
                            capsys, monkeypatch)
    assert code == 2 and "--overwrite" in output and "notes.txt" in output and "Traceback" not in output
    assert foreign.read_text() == "mine"
    code, output = run_main(["audit", root, "--near-duplicate-threshold", "0"], capsys, monkeypatch)
    assert code == 2 and "--near-duplicate-threshold" in output
