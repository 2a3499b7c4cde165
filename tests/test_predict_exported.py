"""`graft predict model.onnx ...`: an exported model predicts without torch, like the run it came from."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import graft
from graft.errors import ModelFileError
from graft.export.exported import ExportedModel
from test_cli import run_main


@pytest.fixture(scope="module")
def onnx_model(linear_probe_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("exported") / "model.onnx"
    graft.load(linear_probe_run.run_dir).export(path, log=None)
    return path


def test_an_exported_model_answers_like_its_run(onnx_model, linear_probe_run, tiny_dataset):
    images = sorted((tiny_dataset / "val").rglob("*.png"))
    exported = ExportedModel(onnx_model).predict(images, top_k=3)
    original = linear_probe_run.classifier.predict(images, top_k=3)
    assert [a.label for a in exported] == [a.label for a in original]
    for mine, theirs in zip(exported, original):
        assert dict(mine.top).keys() == dict(theirs.top).keys()
        # Pillow resizes where graft's pipeline uses torchvision's kernels: a few pixels round differently.
        assert max(abs(dict(mine.top)[c] - dict(theirs.top)[c]) for c in dict(mine.top)) < 0.05


def test_tta_and_unreadable_inputs(onnx_model, tiny_dataset, tmp_path):
    model = ExportedModel(onnx_model)
    image = sorted((tiny_dataset / "val" / "red").iterdir())[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    answers = model.predict([image, broken, image], top_k=3, tta=True)
    assert [a.error is None for a in answers] == [True, False, True] and "broken.jpg" in answers[1].path
    assert sum(p for _, p in answers[0].top) == pytest.approx(1.0, abs=1e-4)
    mirrored = Image.open(image).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    plain, flipped = (dict(model.predict([np.asarray(x)], top_k=3)[0].top) for x in (Image.open(image).convert("RGB"), mirrored))
    expected = {c: (plain[c] + flipped[c]) / 2 for c in plain}
    assert dict(answers[0].top) == pytest.approx(expected, abs=1e-3)  # the mean of the image and its mirror


def test_the_cli_predicts_with_an_exported_model_without_importing_torch(onnx_model, tiny_dataset, tmp_path):
    out = tmp_path / "predictions.csv"
    script = ("import sys; from graft.cli.main import main\n"
              "try:\n    main()\nexcept SystemExit as done:\n    code = done.code\n"
              "print('LOADED', [m for m in ('torch', 'timm', 'torchvision') if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", script, "predict", str(onnx_model), str(tiny_dataset / "val"),
                             "--csv", str(out)], capture_output=True, text=True, timeout=120)
    assert "LOADED []" in result.stdout, result.stdout + result.stderr
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and {row["label"] for row in rows} == {"red", "green", "blue"}
    assert sum(row["label"] == row["path"].split("/")[-2] for row in rows) >= 11


def test_bad_exported_models_are_refused_with_the_fix(onnx_model, tiny_dataset, tmp_path, capsys, monkeypatch):
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    with pytest.raises(ModelFileError, match="not an ONNX model"):
        ExportedModel(text)
    with pytest.raises(ModelFileError, match="no such file"):
        ExportedModel(tmp_path / "missing.onnx")
    import onnx

    bare = onnx.load(str(onnx_model))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ModelFileError, match="no graft metadata"):
        ExportedModel(tmp_path / "bare.onnx")
    image = sorted((tiny_dataset / "val" / "red").iterdir())[0]
    code, output = run_main(["predict", onnx_model, image, "--engine", "torch"], capsys, monkeypatch)
    assert code == 2 and "runs in ONNX Runtime" in output
    code, output = run_main(["predict", tmp_path / "bare.onnx", image], capsys, monkeypatch)
    assert code == 2 and "graft export" in output and "Traceback" not in output
