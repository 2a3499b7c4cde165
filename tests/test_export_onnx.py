"""graft export: the whole classifier as ONNX, checked against PyTorch on real images."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest

import graft
from graft.data.images import load_image
from graft.data.prepare import prepare_image
from graft.export import export
from graft.export.onnx import ExportError
from test_cli import run_main


@pytest.fixture(scope="module")
def exported(linear_probe_run):
    classifier = graft.load(linear_probe_run.run_dir)
    return classifier, export(classifier, linear_probe_run.run_dir / "model.onnx", log=None)


def test_export_answers_like_the_model_and_carries_its_metadata(exported, tiny_dataset):
    classifier, result = exported
    assert result.parity.top1_agreement == 1.0 and result.parity.max_abs_logit_diff < 1e-4
    assert result.parity.images == 12 and "the run's own images" in result.parity.source  # the 12 val images
    meta = json.loads(result.metadata_path.read_text())
    assert meta["classes"] == classifier.classes and meta["input"]["dtype"] == "uint8"
    assert meta["parity"]["top1_agreement"] == 1.0
    props = {p.key: json.loads(p.value) for p in onnx.load(str(result.path)).metadata_props}
    assert props["classes"] == classifier.classes and props["input"]["size"] == [3, 32, 32]
    # Another program: pixels as the metadata describes, any batch size, the same answers as graft.
    images = sorted((tiny_dataset / "val" / "blue").iterdir())[:3]
    pixels = np.stack([prepare_image(load_image(p), classifier.data_config) for p in images])
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    logits, probabilities, features, both = session.run(None, {"pixels": pixels})
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # the backbone's pooled features (what a score of unknown images reads), and both side by side
    assert features.shape == (3, classifier.model.backbone.num_features)
    assert np.array_equal(both, np.concatenate([probabilities, features], axis=1))
    expected = [p.label for p in classifier.predict(images)]
    assert [props["classes"][i] for i in logits.argmax(axis=1)] == expected == ["blue"] * 3


@pytest.mark.slow
def test_an_export_that_changes_an_answer_is_refused_and_not_written(exported, tmp_path, monkeypatch):
    classifier, _ = exported
    import graft.export.onnx as onnx_export

    real = onnx_export.check_parity

    def one_answer_changed(*args, **kwargs):
        parity = real(*args, **kwargs)
        return onnx_export.Parity(images=parity.images, source=parity.source, max_abs_logit_diff=3.0,
                                  top1_agreement=1 - 1 / parity.images)

    monkeypatch.setattr(onnx_export, "check_parity", one_answer_changed)
    with pytest.raises(ExportError, match="changes 1 of 12 top-1 answers"):
        export(classifier, tmp_path / "bad.onnx", log=None)
    assert list(tmp_path.iterdir()) == []


def test_cli_export_and_bad_requests(exported, tmp_path, capsys, monkeypatch):
    classifier, result = exported
    run_dir = result.path.parent
    code, output = run_main(["export", run_dir, "--format", "tflite"], capsys, monkeypatch)
    assert code == 2 and "--format 'tflite': choose one of onnx" in output
    code, output = run_main(["export", run_dir, "--out", tmp_path / "model.bin"], capsys, monkeypatch)
    assert code == 2 and "ends in .onnx" in output
