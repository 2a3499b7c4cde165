"""`graft predict model.onnx ...`: an exported model predicts without torch, like the run it came from;
a run folder on a CPU predicts from its own kept export, without torch too."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import graft
from graft.errors import ModelFileError
from graft.export import export
from graft.export.exported import ExportedModel
from graft.loader import open_predictor
from test_cli import run_main


@pytest.fixture
def onnxruntime_cpu(monkeypatch):
    """A CPU where `--engine auto` predicts in ONNX Runtime: no GPU, whatever this machine has."""
    monkeypatch.setattr("graft.engines.choice.GPU_DEVICE_FILES", ())


@pytest.fixture(scope="module")
def onnx_model(linear_probe_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("exported") / "model.onnx"
    export(graft.load(linear_probe_run.run_dir), path, log=None)
    return path


def test_an_exported_model_answers_like_its_run_in_torch(onnx_model, linear_probe_run, tiny_dataset):
    """The same preparation (graft.data.prepare) for both: only the engines' float rounding differs."""
    images = sorted((tiny_dataset / "val").rglob("*.png"))
    exported = ExportedModel(onnx_model).predict(images, top_k=3)
    original = linear_probe_run.classifier.predict(images, top_k=3, engine="torch")
    assert [a.label for a in exported] == [a.label for a in original]
    for mine, theirs in zip(exported, original):
        assert dict(mine.top) == pytest.approx(dict(theirs.top), abs=1e-4)


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



def _predict_in_a_process(arguments: list[str], env: dict) -> subprocess.CompletedProcess:
    """`graft ARGUMENTS` in a fresh process that prints which of torch, timm, torchvision it imported."""
    script = ("import sys; from graft.cli.main import main\n"
              "try:\n    main()\nexcept SystemExit as done:\n    code = done.code\n"
              "print('LOADED', [m for m in ('torch', 'timm', 'torchvision') if m in sys.modules])\n")
    return subprocess.run([sys.executable, "-c", script, *arguments], capture_output=True, text=True, timeout=300,
                          env=env)


def test_a_run_folder_predicts_from_its_cached_export_without_torch(linear_probe_run, tiny_dataset, tmp_path,
                                                                    fresh_cache):
    """Where ONNX Runtime is the engine, `graft predict RUN` exports the run once (in a child process)
    and predicts from the export: the command itself never imports torch, the first time or later.
    The cache holds no export, only the session's graph of Lite0 (the child does not trace it again)."""
    import os

    env = {**os.environ, "GRAFT_CACHE": str(fresh_cache)}
    arguments = ["predict", str(linear_probe_run.run_dir), str(tiny_dataset / "val"), "--engine", "onnxruntime"]
    first = _predict_in_a_process([*arguments, "--csv", str(tmp_path / "first.csv")], env)
    assert "LOADED []" in first.stdout and "Exporting" in first.stderr, first.stdout + first.stderr
    kept = list((fresh_cache / "engines" / "runs").glob("*.onnx"))
    assert len(kept) == 1 and kept[0].with_name(kept[0].name + ".json").exists()
    again = _predict_in_a_process([*arguments, "--csv", str(tmp_path / "again.csv")], env)
    assert "LOADED []" in again.stdout and "Exporting" not in again.stderr, again.stdout + again.stderr
    rows = {}
    for name in ("first", "again"):
        with (tmp_path / f"{name}.csv").open(newline="") as handle:
            rows[name] = [(row["path"], row["label"], row["probability"]) for row in csv.DictReader(handle)]
    assert rows["first"] == rows["again"] and len(rows["first"]) == 12
    by_torch = linear_probe_run.classifier.predict([path for path, _, _ in rows["first"]], engine="torch")
    assert [label for _, label, _ in rows["first"]] == [answer.label for answer in by_torch]


def test_which_predictions_take_the_export_and_a_failed_export_falls_back(linear_probe_run, tmp_path, monkeypatch,
                                                                          onnxruntime_cpu):
    from graft.classifier import Classifier
    from graft.errors import GraftError

    run = linear_probe_run.run_dir
    assert isinstance(open_predictor(run, engine="torch"), Classifier)  # an explicit engine is followed
    assert isinstance(open_predictor(run, say=print), ExportedModel)  # a CPU under auto: the export, for any count
    monkeypatch.setattr("graft.engines.choice.GPU_DEVICE_FILES", (str(tmp_path),))  # "a GPU is here": torch decides
    assert isinstance(open_predictor(run), Classifier)
    monkeypatch.setattr("graft.engines.choice.GPU_DEVICE_FILES", ())
    # A cache that cannot be written: under auto a warning and torch (fp32); asked for, a clear error.
    monkeypatch.setenv("GRAFT_CACHE", str(tmp_path / "blocked"))
    (tmp_path / "blocked").write_text("a file where the cache folder should be")
    said: list[str] = []
    fallback = open_predictor(run, say=said.append)
    assert isinstance(fallback, Classifier) and (fallback.engine, fallback.precision) == ("torch", "32")
    assert "Predicting in PyTorch (fp32) instead" in said[-1] and "failed" in said[-1]
    with pytest.raises(GraftError, match="The ONNX export of .* failed"):
        open_predictor(run, engine="onnxruntime", say=said.append)


def test_the_export_is_kept_per_model(linear_probe_run, tmp_path):
    """The same model files share one export; renamed classes (which the export holds) get their own."""
    import dataclasses
    import shutil

    from graft.export.cached import export_path

    shutil.copytree(linear_probe_run.run_dir, tmp_path / "copy")
    assert export_path(tmp_path / "copy") == export_path(Path(linear_probe_run.run_dir))
    classifier = graft.load(tmp_path / "copy")
    classifier.record = dataclasses.replace(classifier.record, classes=["rot", "gruen", "blau"])
    classifier.save(tmp_path / "renamed")
    assert export_path(tmp_path / "renamed") != export_path(tmp_path / "copy")


def test_a_fine_tuned_run_is_exported_at_its_end_from_its_backbones_template(tiny_dataset, tmp_path, monkeypatch,
                                                                            onnxruntime_cpu, tiny_backbone):
    """However short, a fine-tuned run on a CPU leaves its export: the template of its backbone's
    structure (traced once, kept in the engines' cache) given the run's own weights, plus the head.
    The next fine-tune traces nothing, and each export answers as its own run does in torch. On the tiny
    test_efficientnet: what is traced and taken does not depend on the backbone, and Lite0 traced for 20 s."""
    import torch

    from conftest import FAST
    from graft.engines import compile as compiling
    from graft.export import cached
    from graft.export import onnx as onnx_export
    from graft.training import finish

    monkeypatch.setenv("GRAFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(finish, "EXPORT_AFTER_SECONDS", 3600.0)  # no run here trains for minutes
    traced: list[str] = []

    def counted(trace):
        return lambda *args, **kwargs: (traced.append(kwargs["output_names"][0]), trace(*args, **kwargs))

    monkeypatch.setattr(compiling, "trace_onnx", counted(compiling.trace_onnx))
    monkeypatch.setattr(onnx_export, "trace_onnx", counted(onnx_export.trace_onnx))
    runs = [graft.train(tiny_dataset, strategy="finetune", out=tmp_path, name=f"tuned-{seed}", seed=seed,
                        cache_dir=tmp_path / "cache", **FAST, **tiny_backbone) for seed in (0, 1)]
    # the pretrained backbone (its features) and the template, once each: neither run was traced whole
    assert traced == ["outputs", "outputs"]
    pixels = torch.randint(0, 256, (6, *runs[0].classifier.data_config.input_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    answers = []
    for run in runs:
        kept = cached.export_path(run.run_dir)
        assert kept.exists() and "export_s" in run.metrics.timings
        exported = open_predictor(run.run_dir)
        assert isinstance(exported, ExportedModel) and exported.path == kept
        with torch.inference_mode():
            reference = run.classifier.model.eval()(pixels).float().softmax(dim=-1).numpy()
        answers.append(exported.probabilities(pixels.numpy()))
        assert np.abs(answers[-1] - reference).max() < 1e-4  # the same pixels: the run's own weights
    assert np.abs(answers[0] - answers[1]).max() > 1e-3  # two runs, two sets of weights


def test_a_frozen_run_is_exported_at_its_end_as_its_backbone_graph_plus_the_head(tiny_dataset, tmp_path, monkeypatch,
                                                                               onnxruntime_cpu, tiny_backbone):
    """However short, a run whose backbone kept its pretrained weights leaves its export: the
    backbone's graph (traced once, kept in the engines' cache) with the head's operators after it.
    The next such run traces nothing, and its first predict needs neither torch nor an export. On the tiny
    test_efficientnet: what is traced and taken does not depend on the backbone."""
    from conftest import FAST
    from graft.engines import compile as compiling
    from graft.export import cached
    from graft.export import onnx as onnx_export

    monkeypatch.setenv("GRAFT_CACHE", str(tmp_path / "cache"))
    traced: list[str] = []

    def counted(trace):
        return lambda *args, **kwargs: (traced.append(kwargs["output_names"][0]), trace(*args, **kwargs))

    monkeypatch.setattr(compiling, "trace_onnx", counted(compiling.trace_onnx))
    monkeypatch.setattr(onnx_export, "trace_onnx", counted(onnx_export.trace_onnx))
    probe = graft.train(tiny_dataset, strategy="linear-probe", out=tmp_path, name="probe", cache_dir=tmp_path / "cache",
                        **FAST, **tiny_backbone)
    assert traced == ["outputs"] and cached.export_path(probe.run_dir).exists()  # the backbone, once
    run = graft.train(tiny_dataset, strategy="feature-extract", hidden=8, out=tmp_path, name="frozen",
                      cache_dir=tmp_path / "cache", **FAST, **tiny_backbone)
    kept = cached.export_path(run.run_dir)
    assert traced == ["outputs"] and kept.exists() and "export_s" in run.metrics.timings
    exported = open_predictor(run.run_dir)
    assert isinstance(exported, ExportedModel) and exported.path == kept
    images = sorted((tiny_dataset / "val").rglob("*.png"))
    scores = np.array([[p for _, p in sorted(a.top)] for a in exported.predict(images, top_k=3)])
    reference = np.array([[p for _, p in sorted(a.top)] for a in run.classifier.predict(images, top_k=3, engine="torch")])
    assert np.abs(scores - reference).max() < 1e-4  # the same pixels, the same network


def test_a_damaged_export_in_the_cache_is_exported_again(linear_probe_run, tmp_path, monkeypatch):
    from graft.export import cached

    run = linear_probe_run.run_dir
    kept = cached.export_path(Path(run))  # in the session's cache
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_bytes(b"half a model")  # what a disk fault, not graft (which renames whole files), leaves
    said: list[str] = []
    exported = open_predictor(run, engine="onnxruntime", say=said.append)
    assert isinstance(exported, ExportedModel) and any("Exporting" in message for message in said)
    assert kept.stat().st_size > 1000 and exported.classes == linear_probe_run.classifier.classes
    kept.write_bytes(b"half a model")
    in_process = graft.load(run)  # the torch classifier runs the same file: written again too
    assert in_process.engine == "onnxruntime" and kept.stat().st_size > 1000




def test_a_big_jpeg_is_decoded_small_alike_in_the_export_graft_predict_and_evaluate(onnx_model, linear_probe_run,
                                                                                    tmp_path):
    """A photo many times the input size is decoded at a reduced JPEG scale (what the run's features
    were extracted from), not whole: the export, graft's own predict and evaluate all see that image."""
    from graft.data.discover import Sample
    from graft.data.images import eval_draft_size, load_image

    ramp = np.linspace(0, 255, 1280, dtype=np.uint8)[None, :].repeat(960, axis=0)
    path = tmp_path / "big.jpg"
    Image.fromarray(np.stack([ramp, np.fliplr(ramp), np.full_like(ramp, 90)], axis=-1)).save(path, quality=90)
    classifier = linear_probe_run.classifier
    drafted = load_image(path, draft_size=eval_draft_size(classifier.data_config.image_size))
    assert drafted.size == (160, 120)  # 1/8 of 1280 x 960 still covers 1.15 x 32 px
    whole = load_image(path)
    for model, options in ((ExportedModel(onnx_model), {}), (classifier, {"engine": "torch"})):
        from_path, from_draft, from_whole = (dict(model.predict([image], top_k=3, **options)[0].top)
                                             for image in (path, drafted, whole))
        assert from_path == pytest.approx(from_draft, abs=1e-6)
        assert from_path != pytest.approx(from_whole, abs=1e-6)  # the whole image would answer otherwise
    _, probabilities = classifier.using("torch").evaluate_samples([Sample(path, 0)])
    from_draft = dict(classifier.predict([drafted], top_k=3, engine="torch")[0].top)
    assert dict(zip(classifier.classes, probabilities[0].tolist())) == pytest.approx(from_draft, abs=1e-6)  # evaluate's
