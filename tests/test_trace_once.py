"""A run whose backbone trained makes its graph once at its end: its evaluation runs the classifier's
graph (graft.export.cached.classifier_graph: its backbone structure's template given the run's
weights, plus the head; a multi-label model's sigmoids too, never a second trace of the whole model),
and its kept export (export_after_training) takes that very graph, with the saved run's metadata and
its own parity check, instead of putting it together again. Counted by the calls that make graphs:
torch.onnx.export (a trace) and graft.engines.compile.with_weights (a template given weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import graft
from conftest import FAST


@pytest.fixture
def onnxruntime_cpu(monkeypatch):
    """A CPU where `--engine auto` predicts in ONNX Runtime: no GPU, whatever this machine has."""
    monkeypatch.setattr("graft.engines.choice.GPU_DEVICE_FILES", ())


@pytest.fixture
def made(monkeypatch):
    """The graphs made while the test runs: the class of each module torch.onnx.export traced, and
    of each module with_weights gave its weights to a template."""
    from graft.engines import compile as compiling

    calls: dict[str, list[str]] = {"traced": [], "weighted": []}
    trace, weights = torch.onnx.export, compiling.with_weights

    def traced(module, *args, **kwargs):
        calls["traced"].append(type(module).__name__)
        return trace(module, *args, **kwargs)

    def weighted(template, module, *args, **kwargs):
        calls["weighted"].append(type(module).__name__)
        return weights(template, module, *args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", traced)
    monkeypatch.setattr(compiling, "with_weights", weighted)
    return calls


@pytest.fixture
def cache(tmp_path, tiny_backbone):
    """A cache of the test's own holding the graph of the pretrained backbone (tiny_backbone: timm's
    tiny test_efficientnet, whose graphs trace in a second where Lite0's took tens; what extracts the
    head phase's features) and nothing else: no template, no graph of a trained network."""
    from graft.backbones import create_backbone
    from graft.engines.compile import compile_onnx

    size = FAST["img_size"]
    net = create_backbone(tiny_backbone["backbone"], weights=tiny_backbone["weights"], img_size=size)
    compile_onnx(net, (3, size, size), tmp_path / "cache" / "engines")
    assert [path.suffix for path in (tmp_path / "cache" / "engines").iterdir()].count(".onnx") == 1
    return tmp_path / "cache"


def _kept_export(run, cache):
    from graft.export.cached import export_path
    from graft.runtime import use_cache_dir

    with use_cache_dir(cache):
        return export_path(run.run_dir)


def _metadata(path) -> dict:
    import onnx

    props = onnx.load(str(path), load_external_data=False).metadata_props
    keys = [prop.key for prop in props]
    assert len(keys) == len(set(keys)), keys  # written once each, not added to the evaluation graph's
    return {prop.key: json.loads(prop.value) for prop in props}


def test_a_fine_tuned_run_makes_its_graph_once_for_its_evaluation_and_its_export(tiny_multilabel, tiny_dataset,
                                                                                 tmp_path, cache, made,
                                                                                 onnxruntime_cpu, tiny_backbone):
    from graft.evaluation import sigmoid
    from graft.export.exported import ExportedModel

    unique = {**FAST, **tiny_backbone, "seed": 7413}  # and the test's own folder of unsaved graphs (conftest)
    tuned = graft.train(tiny_multilabel, strategy="finetune", out=tmp_path, name="multi", cache_dir=cache, **unique)
    # the template of the backbone's structure, traced once and given the run's weights once: the graph that
    # scored val and test is the one exported (before: the whole model traced again to score them)
    assert made == {"traced": ["Backbone"], "weighted": ["Backbone"]}
    assert tuned.record.engine == "onnxruntime" and "export_s" in tuned.metrics.timings
    kept = _kept_export(tuned, cache)
    info = _metadata(kept)  # the saved run's, not the unsaved model's its evaluation ran
    assert info["task"] == "multilabel" and info["strategy"] == "finetune" and info["backbone"] == tuned.record.backbone
    assert info["val_accuracy"] == pytest.approx(tuned.record.accuracy["val"])
    assert info["thresholds"] == pytest.approx({name: row["threshold"]
                                                for name, row in tuned.record.thresholds["per_class"].items()})
    parity = json.loads(kept.with_name(kept.name + ".json").read_text())["parity"]
    assert parity["images"] == 16 and parity["top1_agreement"] == 1.0  # checked on the run's own images
    pixels = torch.randint(0, 256, (6, *tuned.classifier.data_config.input_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = sigmoid(tuned.classifier.model.eval()(pixels).float().numpy())
    assert np.abs(ExportedModel(kept).probabilities(pixels.numpy()) - reference).max() < 1e-4  # a sigmoid per class

    made["traced"].clear(), made["weighted"].clear()
    single = graft.train(tiny_dataset, strategy="finetune", out=tmp_path, name="single", cache_dir=cache, **unique)
    assert made == {"traced": [], "weighted": ["Backbone"]}  # the template is kept; the weights given once
    assert single.record.engine == "onnxruntime" and _metadata(_kept_export(single, cache))["task"] == "single"


def test_an_export_after_training_takes_the_graph_its_evaluation_traced_however_short_the_run(tmp_path, made,
                                                                                             onnxruntime_cpu):
    """A head of another kind than graft's is traced with the whole model: a run shorter than
    EXPORT_AFTER_SECONDS (may_trace False) does not trace it just to export, but where its evaluation
    traced it already its export takes that graph, checked like any export, and traces nothing."""
    from graft.backbones import create_backbone
    from graft.classifier import Classifier
    from graft.export.cached import export_after_training, export_path
    from graft.model import GraftModel
    from graft.runtime import use_cache_dir

    def classifier(seed: int) -> Classifier:
        torch.manual_seed(seed)
        backbone = create_backbone("test_efficientnet", weights="none", img_size=32)
        head = torch.nn.Sequential(torch.nn.LayerNorm(backbone.num_features), torch.nn.Linear(backbone.num_features, 3))
        return Classifier(GraftModel(backbone, head).eval(), ["red", "green", "blue"])

    pixels = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "graft.json").write_text("{}")  # what keys the kept export (its SHA-256: not a run record)
    with use_cache_dir(tmp_path / "cache"):
        untraced = classifier(1)
        assert export_after_training(folder, untraced, graphs=tmp_path / "cache" / "engines", frozen_backbone=False,
                                     may_trace=False) is None and made["traced"] == []  # not traced to export
        evaluated = classifier(0)
        answers = evaluated.probabilities(pixels)  # the evaluation: the whole model traced, once
        assert made["traced"] == ["_PixelsToScores"]
        kept = export_after_training(folder, classifier(0), graphs=tmp_path / "cache" / "engines",
                                     frozen_backbone=False, may_trace=False)
        assert kept == export_path(folder) and made["traced"] == ["_PixelsToScores"]  # taken, not traced again
    from graft.export.exported import ExportedModel

    assert json.loads(kept.with_name(kept.name + ".json").read_text())["parity"]["top1_agreement"] == 1.0
    assert np.abs(ExportedModel(kept).probabilities(pixels) - answers).max() < 1e-5
