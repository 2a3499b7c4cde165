"""Several processes on CPU (gloo): sharded extraction and DDP training match one process."""

from __future__ import annotations

import numpy as np
import pytest

import graft
from graft.backbones import create_backbone
from graft.data.discover import find_data
from graft.features import FeatureCache, backbone_features
from graft.runtime import Runtime


@pytest.mark.slow
def test_sharded_extraction_matches_one_process(tiny_dataset, tmp_path):
    # In torch: graft shards extraction over processes only there (ONNX Runtime, auto's engine on a
    # CPU, extracts in one process with every core, so under auto both sides ran in one process).
    backbone = create_backbone("tf_efficientnet_lite0", img_size=32)
    samples = find_data(tiny_dataset).train
    quiet = Runtime.resolve(workers=0, progress=False, engine="torch")
    one = backbone_features(backbone, samples, split="train", cache=FeatureCache(tmp_path / "one"), runtime=quiet)
    two = backbone_features(backbone, samples, split="train", cache=FeatureCache(tmp_path / "two"),
                            runtime=quiet.but(devices=2))
    a, b = np.asarray(one.features, dtype=np.float32), np.asarray(two.features, dtype=np.float32)
    assert np.abs(b).sum(axis=1).min() > 0  # every row was written by some process
    np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-2)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_like_one(tiny_dataset, tmp_path):
    # One head epoch leaves the head weak (67% here): the image epochs under DDP must do the learning.
    common = dict(strategy="partial", unfreeze=1, img_size=32, epochs=3, head_epochs=1, batch_size=8, views=1,
                  workers=0, progress=False, log=None, out=tmp_path)
    single = graft.train(tiny_dataset, name="one", **common)
    double = _train_retrying_teardown_abort(tiny_dataset, name="two", devices=2, **common)
    assert [row.phase for row in double.history] == [row.phase for row in single.history]
    assert double.metrics.val_accuracy == pytest.approx(single.metrics.val_accuracy, abs=0.2)
    assert double.metrics.val_accuracy >= 0.9
    assert graft.load(double.run_dir).predict([find_data(tiny_dataset).val[0].path])[0].label


def _train_retrying_teardown_abort(data, **options):
    """KNOWN FLAKE, not fixed yet: about one run in five (seen once in the full suite, never alone), a
    spawned gloo worker aborts at exit ("terminate called without an active exception") after
    training finished and its results were written. One retry keeps CI meaningful; a second
    failure, or any other error, fails the test."""
    from torch.multiprocessing import ProcessExitedException

    try:
        return graft.train(data, **options)
    except ProcessExitedException as error:
        if error.signal_name != "SIGABRT":
            raise
        return graft.train(data, **{**options, "name": options["name"] + "-retry"})
