"""graft export --format openvino|torchscript: the whole classifier, its metadata inside, checked against PyTorch."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch

import graft
from graft.data.images import load_image
from graft.data.prepare import prepare_image
from graft.export import export
from graft.export import openvino as openvino_export
from graft.export import torchscript as torchscript_export
from graft.export.common import ExportError, Parity
from test_cli import run_main


@pytest.fixture(scope="module")
def classifier(linear_probe_run):
    return graft.load(linear_probe_run.run_dir)


def pixels_and_labels(classifier, tiny_dataset):
    """Five val images (of two classes) as the metadata says to feed them, and the labels graft gives them."""
    images = sorted((tiny_dataset / "val").rglob("*.png"))[3:8]
    pixels = np.stack([prepare_image(load_image(p), classifier.data_config) for p in images])
    return pixels, [p.label for p in classifier.predict(images)]


def check_metadata_and_parity(classifier, path, meta, said, format):
    """The parity check was printed and passed; the metadata inside the file is the JSON beside it."""
    assert "Parity with PyTorch on 12 images (the run's own images in " in said and "top-1 agreement 100.0%" in said
    beside = json.loads(path.with_name(path.name + ".json").read_text())
    parity = beside.pop("parity")
    assert parity["images"] == 12 and parity["top1_agreement"] == 1.0 and parity["max_abs_logit_diff"] < 1e-4
    assert beside == meta and meta["format"] == f"graft-{format}"
    assert meta["classes"] == classifier.classes and meta["input"]["size"] == [3, 32, 32]
    assert meta["input"]["dtype"] == "uint8" and meta["input"]["mean"] == list(classifier.data_config.mean)


def test_torchscript_export_from_the_cli_answers_like_the_model_and_carries_its_metadata(
        classifier, linear_probe_run, tiny_dataset, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"  # a copy: the shared run folder stays as training left it
    run_dir.mkdir()
    for name in ("graft.json", "model.safetensors"):
        shutil.copy(linear_probe_run.run_dir / name, run_dir / name)
    code, said = run_main(["export", run_dir, "--format", "torchscript"], capsys, monkeypatch)
    path = run_dir / "model.pt"  # the default --out
    assert code == 0 and f"Written {path} and model.pt.json" in said
    assert sorted(p.name for p in run_dir.iterdir()) == ["graft.json", "model.pt", "model.pt.json", "model.safetensors"]
    extra = {"graft.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    meta = json.loads(extra["graft.json"])
    check_metadata_and_parity(classifier, path, meta, said, "torchscript")
    # Another program: pixels as the metadata describes, batch 1 and 5, the same answers as graft.
    five, labels = pixels_and_labels(classifier, tiny_dataset)
    assert len(set(labels)) == 2
    for batch in (1, 5):
        pixels, expected = five[-batch:], labels[-batch:]
        with torch.no_grad():
            logits, probabilities = loaded(torch.from_numpy(pixels))
        assert logits.shape == (batch, 3) and torch.allclose(probabilities.sum(dim=1), torch.ones(batch), atol=1e-5)
        assert [meta["classes"][i] for i in logits.argmax(dim=1)] == expected


def test_openvino_export_answers_like_the_model_and_carries_its_metadata(classifier, tiny_dataset, tmp_path):
    import openvino

    said: list[str] = []
    result = export(classifier, tmp_path / "model.xml", format="openvino", log=said.append)
    assert result.path == tmp_path / "model.xml" and result.metadata_path == tmp_path / "model.xml.json"
    assert result.parity.top1_agreement == 1.0 and len(said) == 1
    model = openvino.Core().read_model(str(result.path))
    meta = {key: json.loads(model.get_rt_info(["graft", key]).astype(str)) for key in model.get_rt_info()["graft"]}
    check_metadata_and_parity(classifier, result.path, meta, said[0], "openvino")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.xml", "model.xml.json"]
    compiled = openvino.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    five, labels = pixels_and_labels(classifier, tiny_dataset)
    assert len(set(labels)) == 2
    for batch in (1, 5):
        pixels, expected = five[-batch:], labels[-batch:]
        answers = compiled({"pixels": pixels})
        logits, probabilities = answers["logits"], answers["probabilities"]
        assert logits.shape == (batch, 3) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        assert [meta["classes"][i] for i in logits.argmax(axis=1)] == expected


def force_one_changed_answer(module, monkeypatch):
    real = module.check_parity

    def one_answer_changed(*args, **kwargs):
        parity = real(*args, **kwargs)
        return Parity(images=parity.images, source=parity.source, max_abs_logit_diff=3.0,
                      top1_agreement=1 - 1 / parity.images)

    monkeypatch.setattr(module, "check_parity", one_answer_changed)


def test_a_torchscript_export_that_changes_an_answer_is_refused_and_not_written(classifier, tmp_path, monkeypatch):
    force_one_changed_answer(torchscript_export, monkeypatch)
    with pytest.raises(ExportError, match="TorchScript export changes 1 of 12 top-1 answers"):
        export(classifier, tmp_path / "model.pt", format="torchscript", log=None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_openvino_export_that_changes_an_answer_is_refused_and_not_written(classifier, tmp_path, monkeypatch):
    force_one_changed_answer(openvino_export, monkeypatch)
    with pytest.raises(ExportError, match="OpenVINO export changes 1 of 12 top-1 answers"):
        export(classifier, tmp_path / "model.xml", format="openvino", log=None)
    assert list(tmp_path.iterdir()) == []


def test_without_openvino_the_export_says_how_to_install_it(classifier, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails, as when it is not installed
    with pytest.raises(ExportError, match=r"pip install 'graft\[openvino\]'"):
        export(classifier, tmp_path / "model.xml", format="openvino", log=None)
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_requests(linear_probe_run, tmp_path, capsys, monkeypatch):
    run_dir = linear_probe_run.run_dir
    code, output = run_main(["export", run_dir, "--format", "tflite"], capsys, monkeypatch)
    assert code == 2 and "--format 'tflite': choose one of onnx, openvino, torchscript" in output
    for format, wrong, right in (("openvino", "model.onnx", ".xml"), ("torchscript", "model.pth", ".pt")):
        code, output = run_main(["export", run_dir, "--format", format, "--out", tmp_path / wrong], capsys, monkeypatch)
        assert code == 2 and f"ends in {right}" in output
    assert list(tmp_path.iterdir()) == []
    code, output = run_main(["export", "--help"], capsys, monkeypatch)
    assert code == 0 and all(name in output for name in ("onnx", "openvino", "torchscript"))
