"""The feature cache: reused when nothing changed, rebuilt when something did, never half-written."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from graft.backbones import create_backbone
from graft.data.discover import find_data
from graft.data.transforms import Augment
from graft.features import FeatureCache, backbone_features
from graft.features import extract as extract_module
from graft.runtime import Runtime

QUIET = Runtime.resolve(workers=0, progress=False)


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
    fast = backbone_features(backbone, splits.val, split="val", cache=cache, runtime=QUIET.but(precision="bf16"))
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
    touched = splits.train[0].path  # an edited file changes the key
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    assert backbone_features(backbone, splits.train, **request).path != base.path and len(calls) == 4
    other_size = create_backbone("tf_efficientnet_lite0", img_size=64)  # new preprocessing, new key
    assert backbone_features(other_size, splits.train, **request).path != base.path and len(calls) == 5
    cut = create_backbone("tf_efficientnet_lite0", img_size=48, cut=2)
    assert backbone_features(cut, splits.train, **request).features.shape[1] == 40 and len(calls) == 6


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
    assert cache.remove() == 1 and cache.entries() == []
