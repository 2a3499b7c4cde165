"""A multi-label run through the one predictor path (issue 25): predict, evaluate, export and serve
answer with the labels over each class's threshold (saved with the run) and every class's sigmoid,
the run folder and its exports alike; --threshold overrides every class's."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import graft
from conftest import FAST
from graft.errors import GraftError
from graft.evaluation import MultiLabelEvaluation, evaluate_multilabel
from test_cli import run_main

LEARN = {**FAST, "head_epochs": 8}


@pytest.fixture(scope="module")
def run(tiny_multilabel, tmp_path_factory):
    return graft.train(tiny_multilabel, strategy="linear-probe", out=tmp_path_factory.mktemp("ml-predict"), name="ml",
                       **LEARN)


@pytest.fixture(scope="module")
def images(tiny_multilabel):
    return sorted((tiny_multilabel.parent / "images").glob("*.png"))[:12]


@pytest.fixture(scope="module")
def truth(tiny_multilabel):
    with open(tiny_multilabel, newline="") as handle:
        return {row["path"].split("/")[-1]: set(row["labels"].split()) for row in csv.DictReader(handle)}


def _thresholds(run) -> dict[str, float]:
    return {name: row["threshold"] for name, row in run.record.thresholds["per_class"].items()}


def _sigmoids(run, paths, *, mirrored: bool = False) -> np.ndarray:
    """Each class's sigmoid, computed here from the network itself (torch, fp32), of the images or
    (`mirrored`) of their mirror images."""
    import torch

    from graft.data.images import eval_draft_size, load_image
    from graft.data.prepare import prepare_image

    config = run.classifier.data_config
    pixels = np.stack([prepare_image(load_image(p, draft_size=eval_draft_size(config.image_size)), config) for p in paths])
    if mirrored:
        pixels = np.ascontiguousarray(pixels[..., ::-1])
    with torch.inference_mode():
        return run.classifier.model.eval()(torch.from_numpy(pixels)).float().sigmoid().numpy()


def test_predict_gives_the_labels_over_each_threshold_and_every_probability(run, images, truth):
    model = graft.load(run.run_dir)
    assert model.task == "multilabel"
    answers = model.predict(images, top_k=2)
    expected = _sigmoids(run, images)
    thresholds = _thresholds(run)
    for answer, row in zip(answers, expected):
        assert list(answer.probabilities) == model.classes  # every class, in the model's order
        assert np.allclose(list(answer.probabilities.values()), row, atol=1e-4)  # sigmoids, not a softmax
        over = [name for name in sorted(model.classes, key=lambda c: -answer.probabilities[c])
                if answer.probabilities[name] >= thresholds[name]]
        assert answer.labels == over and len(answer.top) == 2
    assert not np.allclose(expected.sum(axis=1), 1.0)
    right = sum(set(answer.labels) == truth[answer.path.split("/")[-1]] for answer in answers)
    assert right >= len(answers) // 2  # it learnt the colours
    single = model.predict(images[0])[0]
    assert single.to_dict()["labels"] == single.labels and "label" not in single.to_dict()
    both = (_sigmoids(run, images[:4]) + _sigmoids(run, images[:4], mirrored=True)) / 2  # tta: the mean of the sigmoids
    tta = model.predict(images[:4], tta=True)
    assert np.allclose([list(answer.probabilities.values()) for answer in tta], both, atol=1e-4)


def test_a_threshold_for_every_class_overrides_the_chosen_ones(run, images, linear_probe_run):
    model = graft.load(run.run_dir)
    for value in (0.05, 0.5, 0.95):
        for answer in model.predict(images, threshold=value):
            assert set(answer.labels) == {name for name, p in answer.probabilities.items() if p >= value}
    assert model.evaluate(run.record.data.source, threshold=0.5).per_class["red"]["threshold"] == 0.5
    with pytest.raises(GraftError, match="--threshold 1.5 is not a probability"):
        model.predict(images, threshold=1.5)
    with pytest.raises(GraftError, match="--threshold 0.5: thresholds decide the labels of a multi-label model"):
        graft.load(linear_probe_run.run_dir).predict(images[:1], threshold=0.5)


def test_evaluate_gives_the_multilabel_evaluation_at_the_saved_thresholds(run, tiny_multilabel):
    model = graft.load(run.run_dir)
    evaluation, rows = model.evaluate_images(tiny_multilabel)
    assert isinstance(evaluation, MultiLabelEvaluation) and evaluation.count == 72
    assert {name: row["threshold"] for name, row in evaluation.per_class.items()} == pytest.approx(_thresholds(run))
    probabilities = np.array([[row[f"probability_{name}"] for name in model.classes] for row in rows])
    from graft.data.discover import find_eval_data, sample_targets

    samples, _ = find_eval_data(tiny_multilabel, model.classes, task="multilabel")
    again = evaluate_multilabel(sample_targets(samples, 3, "multilabel"), probabilities, classes=model.classes,
                                thresholds=[_thresholds(run)[name] for name in model.classes])
    assert again.map_macro == pytest.approx(evaluation.map_macro) and evaluation.map_macro >= 0.8
    assert list(rows[0]) == model.evaluation_columns()


def test_a_folder_of_class_folders_is_evaluated_as_one_label_per_image(run, tiny_dataset):
    evaluation = graft.load(run.run_dir).evaluate(tiny_dataset)  # its val/: red, green and blue squares
    assert isinstance(evaluation, MultiLabelEvaluation) and evaluation.cardinality == 1.0
    assert all(row["support"] > 0 for row in evaluation.per_class.values())


def test_graft_predict_writes_labels_and_each_class_probability(run, images, tmp_path, capsys, monkeypatch):
    target = tmp_path / "answers.csv"
    code, output = run_main(["predict", run.run_dir, *images[:3], tmp_path / "missing.png", "--csv", target],
                            capsys, monkeypatch)
    assert code == 1 and "Traceback" not in output  # one image could not be read
    rows = list(csv.reader(target.open()))
    classes = run.record.classes
    assert rows[0] == ["path", "labels", *(f"probability_{name}" for name in classes), "error"]
    expected = graft.load(run.run_dir).predict(images[:3])
    assert [row[1] for row in rows[1:4]] == [" ".join(answer.labels) for answer in expected]
    assert [float(cell) for cell in rows[1][2:5]] == pytest.approx(list(expected[0].probabilities.values()), abs=1e-5)
    assert rows[4][0].endswith("missing.png") and rows[4][1:-1] == ["", "", "", ""] and rows[4][-1]
    code, output = run_main(["predict", run.run_dir, images[0], "--json", "--threshold", "0.05"], capsys, monkeypatch)
    answer = json.loads(output)[0]
    assert code in (0, None) and set(answer) == {"path", "labels", "probabilities", "top"}
    assert answer["labels"] == [n for n in sorted(classes, key=lambda c: -answer["probabilities"][c])
                                if answer["probabilities"][n] >= 0.05]
    code, output = run_main(["predict", run.run_dir, images[0]], capsys, monkeypatch)
    assert code in (0, None) and "labels: " in output


def test_graft_evaluate_prints_and_writes_the_multilabel_evaluation(run, tiny_multilabel, tmp_path, capsys,
                                                                    monkeypatch):
    target = tmp_path / "ev.json"
    code, output = run_main(["evaluate", run.run_dir, tiny_multilabel, "-o", target], capsys, monkeypatch)
    assert code in (0, None), output
    assert "mAP" in output and "exact match" in output
    saved = json.loads(target.read_text())
    assert saved["task"] == "multilabel" and saved["count"] == 72
    header = next(csv.reader((tmp_path / "ev-predictions.csv").open()))
    assert header[:3] == ["path", "true", "predicted"] and header[3].startswith("probability_")
    code, output = run_main(["evaluate", run.run_dir, tiny_multilabel, "-o", tmp_path / "t.json", "--threshold", "2"],
                            capsys, monkeypatch)
    assert code == 2 and "--threshold 2" in output and "Traceback" not in output


@pytest.mark.parametrize("format", ["onnx", "torchscript", "openvino"])
def test_an_export_answers_with_the_same_labels_as_the_run(run, images, tmp_path, format):
    from graft.export import FILE_NAMES, export

    if format == "openvino":
        pytest.importorskip("openvino", reason="openvino is an optional extra (pip install 'graft[openvino]')")
    out = tmp_path / FILE_NAMES[format]
    exported = export(graft.load(run.run_dir), out, format=format, log=None)
    assert exported.parity.label_agreement == 1.0
    info = json.loads(exported.metadata_path.read_text())
    assert info["task"] == "multilabel" and info["thresholds"] == pytest.approx(_thresholds(run))
    loaded = graft.load(out)
    assert loaded.task == "multilabel" and loaded.metadata["thresholds"] == info["thresholds"]
    ours, theirs = graft.load(run.run_dir, engine="torch").predict(images), loaded.predict(images)
    assert [a.labels for a in theirs] == [a.labels for a in ours]
    assert np.allclose([list(a.probabilities.values()) for a in theirs],
                       [list(a.probabilities.values()) for a in ours], atol=1e-4)


def test_serve_answers_with_labels(run, images, linear_probe_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from graft.serve import create_app

    model = graft.load(run.run_dir)
    expected = model.predict(images[0])[0]
    with TestClient(create_app(model)) as client:
        described = client.get("/model").json()
        assert described["task"] == "multilabel" and described["thresholds"] == pytest.approx(_thresholds(run))
        answer = client.post("/predict?cam=1", files={"file": ("a.png", images[0].read_bytes())}).json()["predictions"][0]
        assert answer["labels"] == expected.labels and answer["cam"]["image"].startswith("data:image/png")
        assert [drawn["class"] for drawn in answer["cams"]] == expected.labels and answer["cam"] == answer["cams"][0]
        assert len({drawn["heatmap"] for drawn in answer["cams"]}) == len(expected.labels)  # a map of each label
        assert answer["probabilities"] == pytest.approx(expected.probabilities, abs=1e-5)
        low = client.post("/predict?threshold=0.01", content=images[0].read_bytes()).json()["predictions"][0]
        assert set(low["labels"]) == {n for n, p in low["probabilities"].items() if p >= 0.01}
    with TestClient(create_app(graft.load(linear_probe_run.run_dir))) as client:
        refused = client.post("/predict?threshold=0.5", content=images[0].read_bytes())
        assert refused.status_code == 400 and "multi-label" in refused.json()["detail"]


def test_graft_export_says_what_a_multilabel_export_holds(run, tmp_path, capsys, monkeypatch):
    code, output = run_main(["export", run.run_dir, "--out", tmp_path / "m.onnx"], capsys, monkeypatch)
    assert code in (0, None), output
    assert "label-set agreement 100.0%" in output and "each class's threshold" in output


def test_explain_draws_a_map_for_every_label_given(run, images, tmp_path):
    """graft explain on a multi-label run: one figure per label over its threshold (the most likely
    class where none is), each with that label's sigmoid; --class still picks one class."""
    from graft.explain import explain

    classifier = graft.classifier.load(run.run_dir)
    answers = graft.load(run.run_dir).predict(images[:4], top_k=3)
    drawn = explain(classifier, images[:4], out_dir=tmp_path / "maps")
    expected = [(Path(a.path).name, label) for a in answers for label in (a.labels or [a.label])]
    assert [(Path(d.path).name, d.class_name) for d in drawn] == expected
    for explanation in drawn:
        answer = next(a for a in answers if Path(a.path).name == Path(explanation.path).name)
        assert explanation.png.stat().st_size > 1000
        expected_probability = answer.probabilities[explanation.class_name]
        assert explanation.probability == pytest.approx(expected_probability, abs=1e-4)  # the sigmoid, not a softmax
    one = explain(classifier, images[:2], class_name="red", out_dir=tmp_path / "red")
    assert [d.class_name for d in one] == ["red", "red"]
