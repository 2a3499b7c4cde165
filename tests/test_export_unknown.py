"""An exported model file carries the run's score of unknown images where the format allows (issue 26):
ONNX and OpenVINO compute it in the graph (output `unknown_score`, the threshold in the metadata) and
answer "none of these" as the run does; TorchScript says it does not carry it."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime
import pytest
from PIL import Image

import graft
from conftest import FAST
from graft.classifier import Classifier
from graft.data.images import load_image
from graft.data.prepare import prepare_image
from graft.export import export
from graft.export.unknown_graph import SCORE_OUTPUT
from graft.unknown import fit_unknown
from test_cli import run_main

RECALL = 0.9  # tiny_dataset's val holds 12 images: 90% leaves one out


@pytest.fixture(scope="module")
def scored_run(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("export-unknown")
    return graft.train(tiny_dataset, strategy="linear-probe", out=out, name="scored", known_recall=RECALL, **FAST)


def strange_images() -> list[Image.Image]:
    """Images unlike the three plain colours: a checkerboard and stripes."""
    board = np.indices((48, 48)).sum(axis=0) // 6 % 2 * 255
    stripes = np.tile((np.arange(48) // 4 % 2 * 255)[None, :], (48, 1))
    return [Image.fromarray(np.stack([pattern] * 3, axis=-1).astype(np.uint8)) for pattern in (board, stripes)]


def images_of(dataset) -> list:
    return [*sorted((dataset / "val").glob("*/*.png")), *strange_images()]


def answers_alike(exported, run, images):
    """The exported file's answers and scores against the run folder's own (torch), image by image."""
    ours = graft.load(run, engine="torch").predict(images)
    theirs = exported.predict(images)
    assert [a.label for a in theirs] == [a.label for a in ours]
    assert [a.unknown for a in theirs] == [a.unknown for a in ours]
    assert np.allclose([a.unknown_score for a in theirs], [a.unknown_score for a in ours], atol=1e-4)
    return theirs


def test_an_onnx_export_computes_the_score_and_keeps_the_threshold(scored_run, tiny_dataset, tmp_path):
    exported = export(graft.load(scored_run.run_dir, engine="torch"), tmp_path / "model.onnx", log=None)
    assert exported.parity.unknown_score_diff <= 1e-3 and exported.parity.unknown_agreement == 1.0
    # Any ONNX program: the score is an output, the threshold and the rule in the metadata.
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    meta = {key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()}
    record = json.loads((scored_run.run_dir / "graft.json").read_text())["unknown"]
    assert meta["unknown"]["threshold"] == pytest.approx(record["threshold"])
    assert meta["unknown"]["kind"] == "knn" and "unknown_score" in meta["outputs"]
    assert json.loads(exported.metadata_path.read_text())["unknown"]["threshold"] == meta["unknown"]["threshold"]
    model = graft.load(exported.path)
    pixels = np.stack([prepare_image(image, model.data_config) for image in strange_images()])
    assert (session.run([SCORE_OUTPUT], {"pixels": pixels})[0] > meta["unknown"]["threshold"]).all()
    answers = answers_alike(model, scored_run.run_dir, images_of(tiny_dataset))
    assert model.engine == "onnxruntime" and model.unknown is not None and model.unknown.in_graph
    assert all(answer.unknown for answer in answers[-2:])
    assert sum(answer.unknown for answer in answers[:-2]) <= 2


def test_graft_predict_on_the_exported_file_writes_the_unknown_columns(scored_run, tiny_dataset, tmp_path, capsys,
                                                                         monkeypatch):
    model = tmp_path / "model.onnx"
    code, output = run_main(["export", scored_run.run_dir, "--out", model], capsys, monkeypatch)
    assert code == 0 and "Score of unknown images" in output, output
    strange = tmp_path / "strange"
    strange.mkdir()
    for index, image in enumerate(strange_images()):
        image.save(strange / f"{index}.png")
    code, output = run_main(["predict", model, strange, "--csv", tmp_path / "out.csv"], capsys, monkeypatch)
    assert code == 0, output
    lines = (tmp_path / "out.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert "unknown" in header and "unknown_score" in header
    assert all(line.split(",")[header.index("unknown")] == "true" for line in lines[1:]), lines


@pytest.mark.parametrize(("kind", "k"), [("knn", 3), ("mahalanobis", 1), ("energy", 1), ("max-probability", 1)])
def test_each_kind_of_score_is_computed_in_the_graph_as_graft_computes_it(scored_run, tiny_dataset, tmp_path, kind, k):
    import torch

    from graft.data.discover import find_eval_data

    run = graft.load(scored_run.run_dir, engine="torch")
    train, _ = find_eval_data(tiny_dataset / "train", run.classes, check_images=False)
    val, _ = find_eval_data(tiny_dataset / "val", run.classes, check_images=False)
    model = run.model.eval()
    with torch.inference_mode():
        features = [model.backbone(torch.from_numpy(np.stack([prepare_image(load_image(s.path), run.data_config)
                                                              for s in samples]))).numpy()
                    for samples in (train, val)]
        val_logits = model.head(torch.from_numpy(features[1])).numpy()
    unknown = fit_unknown(features[0], np.array([s.label for s in train]), features[1], val_logits=val_logits,
                          kind=kind, k=k, known_recall=RECALL)
    other = Classifier(run.model, run.classes, replace(run.record), run.runtime, folder=None, engine="torch",
                       unknown=unknown)
    exported = export(other, tmp_path / "model.onnx", log=None)
    # The parity check compared the graph's scores with graft.unknown's on the run's val images.
    assert exported.parity.unknown_score_diff <= 1e-3 and exported.parity.unknown_agreement == 1.0
    loaded = graft.load(exported.path)
    assert loaded.unknown.kind == kind and loaded.unknown.threshold == pytest.approx(unknown.threshold)
    if kind in ("knn", "mahalanobis"):  # runs score embeddings (the scores of logits are measured in benchmarks only)
        answers_alike_to(loaded, other, images_of(tiny_dataset))


def answers_alike_to(exported, classifier, images):
    ours, theirs = classifier.predict(images), exported.predict(images)
    assert [a.unknown for a in theirs] == [a.unknown for a in ours]
    assert np.allclose([a.unknown_score for a in theirs], [a.unknown_score for a in ours], rtol=1e-4, atol=1e-4)


def test_an_openvino_export_computes_the_score_too(scored_run, tiny_dataset, tmp_path):
    pytest.importorskip("openvino")
    exported = export(graft.load(scored_run.run_dir, engine="torch"), tmp_path / "model.xml", format="openvino",
                      log=None)
    assert exported.parity.unknown_agreement == 1.0
    model = graft.load(exported.path)
    assert model.engine == "openvino" and model.unknown is not None
    answers_alike(model, scored_run.run_dir, images_of(tiny_dataset))


def test_a_torchscript_export_says_it_does_not_carry_the_score(scored_run, tmp_path):
    said = []
    export(graft.load(scored_run.run_dir, engine="torch"), tmp_path / "model.pt", format="torchscript",
           log=said.append)
    assert any("does not carry" in line for line in said)
    assert graft.load(tmp_path / "model.pt").unknown is None


def test_a_run_without_a_score_exports_as_before(linear_probe_run, tmp_path):
    exported = export(graft.load(linear_probe_run.run_dir, engine="torch"), tmp_path / "model.onnx", log=None)
    outputs = [output.name for output in onnx.load(str(exported.path)).graph.output]
    assert SCORE_OUTPUT not in outputs and exported.parity.unknown_score_diff is None
    assert graft.load(exported.path).unknown is None


def test_a_score_too_large_for_one_file_is_left_out_and_said(scored_run, tmp_path, monkeypatch):
    monkeypatch.setattr("graft.export.unknown_graph.MAX_SCORE_BYTES", 1000)  # the tiny run's arrays take more
    said = []
    exported = export(graft.load(scored_run.run_dir, engine="torch"), tmp_path / "model.onnx", log=said.append)
    assert any("does not carry" in line and "MB" in line for line in said), said
    assert exported.parity.unknown_score_diff is None and graft.load(exported.path).unknown is None


@pytest.fixture(scope="module")
def tiny_scored(scored_run, tiny_dataset, tmp_path_factory):
    """A classifier of the tiny timm test_efficientnet (random weights, 32 px) with a score of unknown
    images fitted on its own features of tiny_dataset: a head of other layers makes graft trace the whole
    model, and a tiny backbone traces in a second or two where Lite0 took most of a minute a format."""
    import torch

    from graft.backbones import create_backbone
    from graft.data.discover import find_eval_data
    from graft.model import GraftModel
    from graft.runtime import Runtime

    run = graft.load(scored_run.run_dir, engine="torch")
    net = create_backbone("test_efficientnet", weights="none", img_size=FAST["img_size"])
    train, _ = find_eval_data(tiny_dataset / "train", run.classes, check_images=False)
    val, _ = find_eval_data(tiny_dataset / "val", run.classes, check_images=False)
    net.eval()
    with torch.inference_mode():
        features = [net(torch.from_numpy(np.stack([prepare_image(load_image(s.path), net.data_config)
                                                   for s in samples]))).numpy()
                    for samples in (train, val)]
    unknown = fit_unknown(features[0], np.array([s.label for s in train]), features[1], kind="knn", k=3,
                          known_recall=RECALL)
    model = GraftModel(net, torch.nn.Linear(net.num_features, len(run.classes))).eval()
    record = replace(run.record, backbone="test_efficientnet", weights="random initialisation",
                     data_config=net.data_config, config=run.record.config.replace(backbone="test_efficientnet"))
    classifier = Classifier(model, run.classes, record, Runtime.resolve(workers=0, progress=False, engine="torch"),
                            folder=None, engine="torch", unknown=unknown)
    # with graft's own head layers, its file carries the score: what a head of other layers leaves out
    carried = export(classifier, tmp_path_factory.mktemp("tiny-scored") / "model.onnx", log=None)
    assert carried.parity.unknown_score_diff <= 1e-3 and graft.load(carried.path).unknown is not None
    return classifier


@pytest.mark.parametrize("format", ["onnx", "openvino"])
def test_a_head_of_other_layers_is_traced_whole_and_says_the_score_is_not_in_the_file(tiny_scored, tmp_path, format):
    import torch

    if format == "openvino":
        pytest.importorskip("openvino")
    run = tiny_scored
    linear = run.model.head if isinstance(run.model.head, torch.nn.Linear) else list(run.model.head.children())[-1]
    head = run.model.head
    run.model.head = torch.nn.Sequential(linear, torch.nn.Tanh())  # Tanh: not one of graft's head layers
    try:
        said = []
        out = tmp_path / ("model.onnx" if format == "onnx" else "model.xml")
        exported = export(run, out, format=format, log=said.append)
    finally:
        run.model.head = head  # the module's classifier, shared by both formats
    assert any("not in this file" in line for line in said), said
    assert exported.parity.unknown_score_diff is None and graft.load(exported.path).unknown is None


def test_a_damaged_score_record_in_an_exported_file_is_refused_naming_the_file(scored_run, tmp_path):
    from graft.errors import ModelFileError

    exported = export(graft.load(scored_run.run_dir, engine="torch"), tmp_path / "model.onnx", log=None)
    model = onnx.load(str(exported.path))
    for entry in model.metadata_props:
        if entry.key == "unknown":
            entry.value = json.dumps({"kind": "knn"})  # its threshold and figures gone
    onnx.save(model, str(tmp_path / "damaged.onnx"))
    with pytest.raises(ModelFileError, match="damaged.onnx.*incomplete or damaged"):
        graft.load(tmp_path / "damaged.onnx")
