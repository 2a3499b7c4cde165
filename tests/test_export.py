"""Model files: safetensors + JSON, a checksum between them, and no half-written model after a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import graft
from graft.backbones import create_backbone
from graft.classifier import Classifier
from graft.config import TrainConfig
from graft.errors import ModelFileError
from graft.heads import HeadConfig, create_head
from graft.model import GraftModel
from graft.model_files import META_FILE, WEIGHTS_FILE, read_model_files, save_model
from graft.record import RunRecord


def _classifier(hidden=None):
    backbone = create_backbone("test_efficientnet", weights="none", img_size=32)
    model = GraftModel(backbone, create_head(backbone.num_features, 3, HeadConfig(hidden=hidden, dropout=0.1)))
    record = RunRecord(backbone="test_efficientnet", weights="random initialisation", cut=None,
                       data_config=backbone.data_config, classes=["a", "b", "c"], strategy="scratch",
                       config=TrainConfig.from_options(strategy="scratch", backbone="test_efficientnet",
                                                       hidden=hidden, dropout=0.1))
    return Classifier(model.eval(), ["a", "b", "c"], record)


@pytest.mark.parametrize("hidden", [None, 16])
def test_round_trip_gives_identical_outputs(tmp_path, hidden):
    original = _classifier(hidden)
    original.save(tmp_path / "m")
    loaded = graft.load(tmp_path / "m")
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(original.model(x), loaded.model(x))
    assert loaded.classes == ["a", "b", "c"] and loaded.record == original.record
    assert json.loads((tmp_path / "m" / META_FILE).read_text())["weights_sha256"]
    assert (tmp_path / "m" / WEIGHTS_FILE).read_bytes()[:8] != b"\x80\x02\x8a\x0a" * 2  # not a pickle


def test_replaced_weights_are_refused(tmp_path):
    _classifier().save(tmp_path / "a")
    _classifier().save(tmp_path / "b")  # different random init
    (tmp_path / "a" / WEIGHTS_FILE).write_bytes((tmp_path / "b" / WEIGHTS_FILE).read_bytes())
    with pytest.raises(ModelFileError, match="checksum"):
        read_model_files(tmp_path / "a")


def test_a_crash_while_saving_leaves_no_model_that_looks_complete(tmp_path, monkeypatch):
    import graft.model_files as export

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    classifier = _classifier()
    monkeypatch.setattr(export, "write_json_atomic", crash)
    with pytest.raises(RuntimeError):
        save_model(classifier.model, classifier.record, tmp_path / "m")
    with pytest.raises(ModelFileError, match="not a complete graft model"):
        graft.load(tmp_path / "m")


def test_damaged_json_and_missing_folders_are_explained(tmp_path):
    with pytest.raises(ModelFileError, match="no such run"):
        graft.load(tmp_path / "nothing")
    _classifier().save(tmp_path / "m")
    (tmp_path / "m" / META_FILE).write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        graft.load(tmp_path / "m" / META_FILE)


def test_a_run_with_a_skipped_file_is_exported_at_its_end_and_by_graft_export(tiny_dataset, tmp_path, capsys,
                                                                              monkeypatch):
    """Issue 24: the parity check read the file the run had skipped as unreadable and refused, at the
    end of training (so every predict tried again, 5 s instead of 0.5 s) and in graft export."""
    import shutil

    from conftest import FAST
    from graft.export.cached import export_path
    from test_cli import run_main

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    for split in ("train", "val"):
        (data / split / "blue" / "0-broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    messages: list[str] = []
    run = graft.train(data, strategy="linear-probe", out=tmp_path / "runs", name="skipped",
                      **{**FAST, "log": messages.append})
    skipped = json.loads((run.run_dir / "skipped.json").read_text())
    assert {Path(row["path"]).name for row in skipped} == {"0-broken.png"} and len(skipped) == 2
    assert not [m for m in messages if "was not exported" in m], messages
    assert export_path(run.run_dir).exists()  # the first predict needs no export of its own
    code, output = run_main(["export", run.run_dir, "--out", tmp_path / "model.onnx"], capsys, monkeypatch)
    assert code in (0, None), output
    assert "the run's own images" in output and (tmp_path / "model.onnx").exists()
