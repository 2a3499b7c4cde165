"""One predictor for every model file: `graft.load` opens a run folder and every export format, and
every way of predicting a run gives the same answers on the same images (one image preparation,
graft.data.prepare; one engine choice, graft.engines.choice; one predictor, graft.predictor)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

import graft
from graft.classifier import Classifier
from graft.errors import GraftError, ModelFileError
from graft.export import export
from graft.export.exported import ExportedModel
from graft.export.loaded import OpenVinoModel, TorchScriptModel
from graft.predictor import BatchPredictor, Predictor
from test_cli import run_main


@pytest.fixture(scope="module")
def exports(linear_probe_run, tmp_path_factory):
    """The session's linear-probe run exported in every format, in a folder of its own."""
    folder = tmp_path_factory.mktemp("every-format")
    classifier = graft.load(linear_probe_run.run_dir)
    return {format: export(classifier, folder / name, format=format, log=None).path
            for format, name in (("onnx", "model.onnx"), ("openvino", "model.xml"), ("torchscript", "model.pt"))}


@pytest.fixture(scope="module")
def mixed_images(tmp_path_factory):
    """Images of every size and kind a user hands over, their colours mixed so that the answers are
    far from certain: smaller than the 32 px input (resized whole), the input's size, photos larger
    than it in both orientations (resized and centre-cropped), a JPEG big enough to decode at a
    reduced scale, grey and transparent ones."""
    folder = tmp_path_factory.mktemp("mixed-images")
    rng = np.random.default_rng(7)
    specs = [((20, 20), "png"), ((32, 32), "png"), ((37, 45), "png"), ((300, 200), "jpg"), ((200, 300), "jpg"),
             ((640, 480), "jpg"), ((33, 90), "png"), ((1000, 700), "jpg"), ((48, 48), "bmp"), ((64, 40), "webp")]
    paths = []
    for index, ((width, height), suffix) in enumerate(specs * 2):
        colours = rng.integers(20, 235, (3, 3))
        mix = rng.dirichlet(np.ones(3))  # a blend of the red, green and blue classes' colours
        base = (mix @ np.array([[200, 30, 30], [30, 180, 40], [30, 40, 200]]) + colours[0] * 0.1).clip(0, 255)
        pixels = np.clip(base + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        if index in (4, 15):
            image = image.convert("L")
        if index == 9:
            image = image.convert("RGBA")
            suffix = "png"
        path = folder / f"{index:02d}.{suffix}"
        image.save(path)
        paths.append(path)
    return paths


def _csv_answers(path) -> list[tuple[str, dict[str, float]]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [(row["path"], {row["label"]: float(row["probability"]), row["class_2"]: float(row["probability_2"]),
                           row["class_3"]: float(row["probability_3"])}) for row in rows]


def test_every_way_of_predicting_a_run_gives_the_same_answers(linear_probe_run, exports, mixed_images, tmp_path,
                                                              capsys, monkeypatch):
    from fastapi.testclient import TestClient

    from graft.serve import create_app

    run_dir = linear_probe_run.run_dir
    answers = {}
    for name, target in (("graft.load(RUN)", run_dir), ("graft.load(RUN) in torch", run_dir),
                         ("graft.load(model.onnx)", exports["onnx"]), ("graft.load(model.xml)", exports["openvino"]),
                         ("graft.load(model.pt)", exports["torchscript"])):
        model = graft.load(target, engine="torch" if "torch" in name else "auto")
        answers[name] = [(a.path, dict(a.top)) for a in model.predict(mixed_images, top_k=3, batch_size=7)]
    for name, target in (("graft predict RUN", run_dir), ("graft predict model.onnx", exports["onnx"])):
        out = tmp_path / f"{len(answers)}.csv"
        code, output = run_main(["predict", target, *mixed_images, "--csv", out, "--top-k", "3"], capsys, monkeypatch)
        assert code in (0, None), output
        answers[name] = _csv_answers(out)
    with TestClient(create_app(graft.load(run_dir))) as client:
        files = [("file", (str(path), path.read_bytes())) for path in mixed_images]
        served = client.post("/predict?top_k=3", files=files).json()["predictions"]
    answers["graft serve"] = [(a["path"], {t["class"]: t["probability"] for t in a["top"]}) for a in served]

    reference = answers["graft.load(RUN)"]
    assert [path for path, _ in reference] == [str(path) for path in mixed_images]
    labels = [max(top, key=top.get) for _, top in reference]
    assert len(set(labels)) >= 2 and min(max(top.values()) for _, top in reference) < 0.9  # not a trivial case
    for name, answer in answers.items():
        assert [path for path, _ in answer] == [str(path) for path in mixed_images], name
        assert [max(top, key=top.get) for _, top in answer] == labels, name
        for (_, mine), (_, theirs) in zip(answer, reference):
            assert mine == pytest.approx(theirs, abs=1e-4), name


def test_load_opens_every_format_as_a_predictor(linear_probe_run, exports, tiny_dataset):
    kinds = {"run": Classifier, "onnx": ExportedModel, "openvino": OpenVinoModel, "torchscript": TorchScriptModel}
    val = tiny_dataset / "val"
    for kind, target in [("run", linear_probe_run.run_dir), *exports.items()]:
        model = graft.load(target)
        assert isinstance(model, kinds[kind]) and isinstance(model, Predictor) and isinstance(model, BatchPredictor)
        assert model.classes == linear_probe_run.classifier.classes
        assert model.metadata["classes"] == model.classes and model.metadata["input"]["size"] == [3, 32, 32]
        assert model.metadata["backbone"] == "tf_efficientnet_lite0" and model.metadata["strategy"] == "linear-probe"
        assert model.evaluate(val).accuracy == linear_probe_run.metrics.val_accuracy, kind
    assert graft.load(linear_probe_run.run_dir / "graft.json").classes == linear_probe_run.classifier.classes


def test_load_refuses_anything_else_with_the_fix(tmp_path, exports):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    with pytest.raises(GraftError, match=r"notes.txt: not a model graft can open.*run folder.*model.onnx"):
        graft.load(notes)
    with pytest.raises(ModelFileError, match="no such run or model folder"):
        graft.load(tmp_path / "missing")
    for name in ("broken.onnx", "broken.pt"):
        (tmp_path / name).write_bytes(b"not a model")
        with pytest.raises(ModelFileError, match=f"{name}: not an? "):
            graft.load(tmp_path / name)
    (tmp_path / "broken.xml").write_text("<net/>")
    with pytest.raises(ModelFileError, match="broken.xml: no such file, or no broken.bin beside it"):
        graft.load(tmp_path / "broken.xml")
    with pytest.raises(ModelFileError, match="missing.onnx: no such file"):
        graft.load(tmp_path / "missing.onnx")
    with pytest.raises(GraftError, match=r"--engine torch: an exported .onnx model runs in ONNX Runtime"):
        graft.load(exports["onnx"], engine="torch")


def test_an_exported_model_is_served_without_activation_maps(exports, tiny_dataset):
    from fastapi.testclient import TestClient

    from graft.serve import create_app

    path = sorted((tiny_dataset / "val" / "red").iterdir())[0]
    with TestClient(create_app(graft.load(exports["onnx"]))) as client:
        assert client.get("/model").json()["engine"] == "onnxruntime"
        answer = client.post("/predict", content=path.read_bytes()).json()["predictions"][0]
        assert answer["label"] == "red"
        refused = client.post("/predict?cam=1", content=path.read_bytes())
        assert refused.status_code == 400 and "serve the run folder" in refused.json()["detail"]


def test_answers_become_rows_json_and_http_in_one_place():
    from graft.prediction import Prediction, csv_header, http_answer, write_answers

    good, bad = Prediction("a.jpg", [("roses", 0.75), ("tulips", 0.25)]), Prediction("b.jpg", [], "truncated")
    assert csv_header(2) == ["path", "label", "probability", "class_2", "probability_2", "error"]
    assert good.csv_row(2) == ["a.jpg", "roses", 0.75, "tulips", 0.25, ""]
    assert bad.csv_row(2) == ["b.jpg", "", "", "", "", "truncated"]
    assert good.to_dict() == {"path": "a.jpg", "label": "roses", "probability": 0.75,
                              "top": [{"class": "roses", "probability": 0.75}, {"class": "tulips", "probability": 0.25}]}
    assert bad.to_dict() == {"path": "b.jpg", "error": "truncated"}
    assert http_answer([good]) == {"predictions": [good.to_dict()]}
    stream, shown = io.StringIO(), []
    count, failed = write_answers([good, bad], columns=2, json_out=stream, show=shown.append)
    import json

    assert (count, failed, shown) == (2, [bad], [good])
    assert json.loads(stream.getvalue()) == [good.to_dict(), bad.to_dict()]
