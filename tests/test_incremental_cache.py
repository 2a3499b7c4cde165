"""A feature cache miss reuses the rows of unchanged files from earlier entries made with the same
settings, and extracts only the new or changed files (issue 26: a round of labelling costs seconds)."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from graft.backbones import create_backbone
from graft.data.discover import Sample, find_data
from graft.data.transforms import Augment
from graft.features import FeatureCache, backbone_features
from graft.features import extract as extract_module
from graft.runtime import Runtime

# torch, as tests/test_cache.py: no graph traced into each test's own cache folder
QUIET = Runtime.resolve(workers=0, progress=False, engine="torch", batch_size=8)


@pytest.fixture()
def setup(tiny_dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    backbone = create_backbone("tf_efficientnet_lite0", img_size=48)
    return data, backbone, FeatureCache(tmp_path / "cache")


@pytest.fixture()
def reads(monkeypatch):
    """The paths of the images the backbone ran on, in order; reading the path `stop_at`, when set,
    is a Ctrl-C. Progress is recorded after every batch, so a resumed build is exact."""
    from graft.features import writing

    monkeypatch.setattr(writing, "PROGRESS_EVERY_S", 0.0)
    log = ReadLog()
    real = extract_module.ViewDataset.__getitem__

    def getitem(self, index):
        if self.paths[index] == log.stop_at:
            log.stop_at = None
            raise KeyboardInterrupt
        log.append(self.paths[index])
        return real(self, index)

    monkeypatch.setattr(extract_module.ViewDataset, "__getitem__", getitem)
    return log


class ReadLog(list):
    stop_at = None


def _first(setup, reads):
    """The training split extracted once into the cache: its samples and features."""
    data, backbone, cache = setup
    samples = find_data(data).train
    first = backbone_features(backbone, samples, split="train", cache=cache, runtime=QUIET)
    assert len(reads) == len(samples)
    reads.clear()
    return samples, first


def _cold(backbone, samples, tmp_path, **request):
    """The features of `samples` extracted whole, in a cache of their own."""
    fresh = FeatureCache(tmp_path / "cold")
    return np.asarray(backbone_features(backbone, samples, split="train", cache=fresh, runtime=QUIET,
                                        **request).features)


def test_added_images_are_the_only_ones_extracted(setup, reads, tmp_path, make_image, capsys):
    data, backbone, cache = setup
    before = find_data(data).train
    backbone_features(backbone, before, split="train", cache=cache, runtime=QUIET)
    assert len(reads) == len(before)
    added = [make_image(data / "train" / colour / f"new{index}.png", color=rgb, seed=100 + index)
             for index, (colour, rgb) in enumerate([("red", (200, 30, 30)), ("blue", (30, 40, 200)),
                                                    ("red", (200, 30, 30))])]
    after = find_data(data).train
    assert len(after) == len(before) + 3
    reads.clear()
    second = backbone_features(backbone, after, split="train", cache=cache, runtime=QUIET.but(progress=True))
    assert sorted(reads) == sorted(added)  # only the new images went through the backbone
    assert "train features: 36 reused, 3 extracted" in capsys.readouterr().err
    assert len(cache.entries()) == 2 and cache.verify() == []
    assert np.array_equal(second.labels, [s.label for s in after])
    cold = _cold(backbone, after, tmp_path)
    np.testing.assert_allclose(np.asarray(second.features, dtype=np.float32), cold.astype(np.float32),
                               rtol=1e-2, atol=1e-2)
    # the new entry is a donor in turn, complete: the same list again is a plain hit
    reads.clear()
    assert backbone_features(backbone, after, split="train", cache=cache, runtime=QUIET).path == second.path
    assert reads == []


def test_a_relabel_reuses_every_row_with_the_new_labels(setup, reads, capsys):
    _, backbone, cache = setup
    samples, first = _first(setup, reads)
    relabelled = [dataclasses.replace(s, label=(s.label + 1) % 3, labels=()) if index % 5 == 0 else s
                  for index, s in enumerate(samples)]
    second = backbone_features(backbone, relabelled, split="train", cache=cache, runtime=QUIET.but(progress=True))
    assert reads == [] and second.path != first.path  # a new entry, no image through the backbone
    assert "train features: 36 reused, 0 extracted" in capsys.readouterr().err
    assert np.array_equal(second.labels, [s.label for s in relabelled])
    assert not np.array_equal(second.labels, first.labels)
    assert np.array_equal(np.asarray(second.features), np.asarray(first.features))


def test_a_file_rewritten_in_place_is_extracted_again(setup, reads, tmp_path, make_image):
    _, backbone, cache = setup
    samples, first = _first(setup, reads)
    changed = samples[4].path
    make_image(changed, color=(30, 180, 40), seed=999)  # other pixels, same path (and maybe the same size)
    second = backbone_features(backbone, samples, split="train", cache=cache, runtime=QUIET)
    assert reads == [changed]
    assert not np.allclose(np.asarray(second.features[4], dtype=np.float32),
                           np.asarray(first.features[4], dtype=np.float32), atol=1e-2)
    np.testing.assert_allclose(np.asarray(second.features, dtype=np.float32),
                               _cold(backbone, samples, tmp_path).astype(np.float32), rtol=1e-2, atol=1e-2)


def test_augmented_views_are_never_reused(setup, reads, make_image):
    data, backbone, cache = setup
    request = dict(split="train", cache=cache, runtime=QUIET, view=0, augment=Augment())
    before = find_data(data).train
    backbone_features(backbone, before, **request)
    make_image(data / "train" / "red" / "new.png", color=(200, 30, 30), seed=100)
    after = find_data(data).train
    reads.clear()
    view = backbone_features(backbone, after, **request)
    assert sorted(reads) == sorted(s.path for s in after)  # every image again
    assert "settings" not in view.meta and not (view.path / "files.npy").exists()


def test_a_damaged_earlier_entry_is_never_reused(setup, reads, tmp_path, make_image, capsys):
    data, backbone, cache = setup
    _, first = _first(setup, reads)
    path = first.path / "features.npy"
    damaged = bytearray(path.read_bytes())
    damaged[-3] ^= 0xFF  # a row's bytes: its checksum no longer matches
    path.write_bytes(bytes(damaged))
    make_image(data / "train" / "red" / "new.png", color=(200, 30, 30), seed=100)
    after = find_data(data).train
    second = backbone_features(backbone, after, split="train", cache=cache, runtime=QUIET)
    assert sorted(reads) == sorted(s.path for s in after)  # nothing taken from the damaged entry
    assert "damaged" in capsys.readouterr().err and not first.path.exists()
    assert [entry.key for entry in cache.entries()] == [second.meta["key"]] and cache.verify() == []
    np.testing.assert_allclose(np.asarray(second.features, dtype=np.float32),
                               _cold(backbone, after, tmp_path).astype(np.float32), rtol=1e-2, atol=1e-2)


def test_an_interrupted_build_that_reuses_rows_goes_on_from_the_rows_it_completed(setup, reads, tmp_path,
                                                                                   make_image):
    data, backbone, cache = setup
    _first(setup, reads)
    for index in range(20):
        make_image(data / "train" / "blue" / f"new{index:02d}.png", color=(30, 40, 200), seed=200 + index)
    after = find_data(data).train
    new = [s.path for s in after if s.path.name.startswith("new")]
    reads.stop_at = new[10]  # in the second batch of 8 new images: the first batch is recorded
    with pytest.raises(KeyboardInterrupt):
        backbone_features(backbone, after, split="train", cache=cache, runtime=QUIET)
    (partial,) = cache.partials()
    assert partial.released
    reads.clear()
    resumed = backbone_features(backbone, after, split="train", cache=cache, runtime=QUIET)
    assert reads == new[8:]  # the first batch of new images is on disk, with every reused row before it
    assert cache.partials() == [] and cache.verify() == []
    np.testing.assert_allclose(np.asarray(resumed.features, dtype=np.float32),
                               _cold(backbone, after, tmp_path).astype(np.float32), rtol=1e-2, atol=1e-2)


@pytest.mark.slow
def test_sharded_extraction_of_the_new_images_matches_one_process(setup, tmp_path, make_image):
    data, backbone, cache = setup
    backbone_features(backbone, find_data(data).train, split="train", cache=cache, runtime=QUIET)
    for index in range(5):
        make_image(data / "train" / "green" / f"new{index}.png", color=(30, 180, 40), seed=300 + index)
    after = find_data(data).train
    two = backbone_features(backbone, after, split="train", cache=cache, runtime=QUIET.but(devices=2))
    assert sorted(path.name for path in two.path.iterdir()) == ["contents.npy", "features.npy", "files.npy",
                                                                 "labels.npy", "meta.json"]  # no scratch file left
    assert cache.verify() == []
    np.testing.assert_allclose(np.asarray(two.features, dtype=np.float32),
                               _cold(backbone, after, tmp_path).astype(np.float32), rtol=1e-2, atol=1e-2)


def _suggestion(path, rank: int):
    from graft.suggest import Suggestion

    return Suggestion(index=rank - 1, rank=rank, reason="", reasons=(), top=("red", 0.5), second=("blue", 0.4),
                      margin=0.1, entropy=0.7, unlikeness=0.0, distance=0.0, path=str(path))


def test_images_the_labelling_page_copies_into_data_reuse_the_unlabelled_images_rows(setup, reads, tmp_path,
                                                                                    make_image, capsys):
    """Issue 26: suggest extracts the unlabelled images, the labelling page copies the labelled ones
    into DATA (new paths, new inodes and times: the identity differs), and the next extraction of
    DATA extracts none of them, the copies' rows taken from the unlabelled images' entry by content."""
    from graft.labelling import LabellingSession

    data, backbone, cache = setup
    _first(setup, reads)
    unlabelled = tmp_path / "unlabelled"
    pool = [make_image(unlabelled / f"u{index}.png", color=(200, 30, 30), seed=500 + index) for index in range(3)]
    found = backbone_features(backbone, [Sample(path, -1) for path in pool], split="unlabelled", cache=cache,
                              runtime=QUIET)
    assert sorted(reads) == sorted(pool)
    session = LabellingSession([_suggestion(path, rank) for rank, path in enumerate(pool, start=1)],
                               ["blue", "green", "red"], labels_csv=tmp_path / "labels.csv", data=data)
    session.decide(1, "red")
    session.decide(2, "blue")
    copied = session.copy_into_data()
    assert len(copied.copied) == 2
    (data / "train" / "grey").mkdir()  # a new class, made by hand: the third image copied into it
    make_image(data / "val" / "grey" / "v.png", color=(128, 128, 128), seed=600)
    shutil.copy(pool[2], data / "train" / "grey" / "u2.png")
    after = find_data(data).train
    reads.clear()
    second = backbone_features(backbone, after, split="train", cache=cache, runtime=QUIET.but(progress=True))
    assert reads == []  # not one image through the backbone
    assert f"train features: {len(after)} reused, 0 extracted" in capsys.readouterr().err
    by_path = {s.path: row for row, s in enumerate(after)}
    for source, row in ((pool[0], by_path[copied.images[0].target]), (pool[1], by_path[copied.images[1].target]),
                        (pool[2], by_path[data / "train" / "grey" / "u2.png"])):
        assert np.array_equal(np.asarray(second.features[row]), np.asarray(found.features[pool.index(source)]))
    np.testing.assert_allclose(np.asarray(second.features, dtype=np.float32),
                               _cold(backbone, after, tmp_path).astype(np.float32), rtol=1e-2, atol=1e-2)


def test_a_copy_with_other_bytes_under_a_known_name_is_extracted(setup, reads, make_image):
    """Matching by content never takes a row for a file whose bytes differ: a new image that shares
    a name (and size) with an extracted one is extracted."""
    data, backbone, cache = setup
    samples, _ = _first(setup, reads)
    source = samples[0].path
    other = make_image(data / "train" / "grey" / source.name, color=(30, 180, 40), seed=4321)
    make_image(data / "val" / "grey" / "v.png", color=(128, 128, 128), seed=600)
    backbone_features(backbone, find_data(data).train, split="train", cache=cache, runtime=QUIET)
    assert reads == [other]


def test_prune_removes_only_entries_a_newer_entry_holds_whole(setup, reads, tmp_path, make_image, capsys,
                                                               monkeypatch):
    """An entry every row of which a newer entry with the same settings holds (its images added to)
    is superseded: `graft cache prune` removes it, and asking for its images again extracts nothing.
    An entry with a row no newer entry holds (an image left out since), another settings key, or an
    augmented view is kept."""
    from test_cache import _run_main

    data, backbone, cache = setup
    monkeypatch.setattr("graft.features.cache.default_cache_dir", lambda: cache.root)
    samples, first = _first(setup, reads)
    view = backbone_features(backbone, samples, split="train", cache=cache, runtime=QUIET, view=0, augment=Augment())
    bf16 = backbone_features(backbone, samples, split="train", cache=cache,
                             runtime=QUIET.but(precision="bf16", inference_precision="bf16"))
    make_image(data / "train" / "red" / "new.png", color=(200, 30, 30), seed=100)
    after = find_data(data).train
    grown = backbone_features(backbone, after, split="train", cache=cache, runtime=QUIET)
    shrunk = backbone_features(backbone, [s for s in after if s.path != samples[-1].path], split="train", cache=cache,
                               runtime=QUIET)  # the newest, without one image of the first
    assert len(cache.entries()) == 5
    assert {entry.key for entry in cache.superseded()} == {first.meta["key"]}

    code, output = _run_main(["cache", "prune", "--dry-run"], capsys, monkeypatch)
    assert code == 0 and first.meta["key"] in output and "Would remove 1" in output, output
    assert first.path.exists()
    code, output = _run_main(["cache", "prune"], capsys, monkeypatch)
    assert code == 0 and "Removed 1" in output, output
    assert not first.path.exists()
    assert {entry.key for entry in cache.entries()} == {entry.meta["key"] for entry in (view, bf16, grown, shrunk)}
    reads.clear()
    again = backbone_features(backbone, samples, split="train", cache=cache, runtime=QUIET)
    assert reads == []  # its rows came back from the entry that held them
    assert np.array_equal(np.asarray(again.features), np.asarray(first.features))
    code, output = _run_main(["cache", "prune"], capsys, monkeypatch)
    assert code == 0 and "Nothing to prune" in output  # each entry left has a row no newer one holds
