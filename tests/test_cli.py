"""The command line, end to end, as a user types it; bad input gives a message, never a traceback."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from graft.cli.main import app, main

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def run_main(args, capsys, monkeypatch):
    """Through main(), as the console script does: user errors exit 2 with one message."""
    monkeypatch.setattr("sys.argv", ["graft", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out + captured.err


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    result = run("train", tiny_dataset, "--strategy", "feature-extract", "--img-size", "64", "--head-epochs", "5",
                 "--views", "1", "--workers", "0", "--no-audit", "--out", out, "--name", "cli")
    assert result.exit_code == 0, result.output
    return out / "cli", result.output


def test_train_prints_summary_history_and_results(trained):
    run_dir, output = trained
    assert "Trainable" in output or "trainable" in output
    for text in ("Parameters (head phase)", "Training history", "Results", "Confusion matrix", str(run_dir), "report.html"):
        assert text in output, text
    meta = json.loads((run_dir / "graft.json").read_text())
    assert meta["classes"] == ["blue", "green", "red"] and meta["strategy"] == "feature-extract"
    assert meta["data_config"]["input_size"] == [3, 64, 64] and "torch" in meta["versions"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val_accuracy"] >= 0.9 and metrics["history"]
    assert (run_dir / "logs" / "head" / "metrics.csv").exists()
    assert list((run_dir / "logs" / "head").glob("events.out.tfevents.*"))


def test_predict_prints_classes_and_json(trained, tiny_dataset):
    run_dir, _ = trained
    image = sorted((tiny_dataset / "val" / "red").iterdir())[0]
    result = run("predict", run_dir, image, "--top-k", "2")
    assert result.exit_code == 0 and "red" in result.output
    result = run("predict", run_dir, image, "--json")
    (row,) = json.loads(result.output)
    assert row["top"][0]["class"] == "red" and len(row["top"]) == 3
    assert sum(entry["probability"] for entry in row["top"]) == pytest.approx(1.0, abs=1e-4)


def test_evaluate_prints_and_writes_metrics(trained, tiny_dataset, tmp_path):
    run_dir, _ = trained
    target = tmp_path / "eval.json"
    result = run("evaluate", run_dir, tiny_dataset, "--output", target)
    assert result.exit_code == 0, result.output
    assert "precision" in result.output and "Confusion matrix" in result.output
    written = json.loads(target.read_text())
    assert written["count"] == 12 and len(written["confusion"]) == 3 and written["accuracy"] >= 0.9
    assert written["engine"] in ("onnxruntime", "torch") and written["precision"] == "32"  # what computed them


def test_predict_imagenet_names_classes(tmp_path):
    from PIL import Image
    from skimage import data

    path = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(path)
    result = run("predict", "--imagenet", path, "--top-k", "3")
    assert result.exit_code == 0 and "espresso" in result.output
    # streamed like any model's predictions: batches of --batch-size, an unreadable file answered, exit 1
    Image.fromarray(data.coffee()).save(tmp_path / "again.png")
    result = run("predict", "--imagenet", path, tmp_path / "missing.jpg", tmp_path / "again.png", "--batch-size", "1",
                 "--json")
    answers = json.loads(result.stdout[: result.stdout.rindex("]") + 1])
    assert result.exit_code == 1 and [a.get("label", "")[:8] for a in answers] == ["espresso", "", "espresso"]
    assert "not found" in answers[1]["error"] and f"not read: {tmp_path / 'missing.jpg'}" in result.output


def test_summary_counts_trainable_and_frozen():
    result = run("summary", "tf_efficientnet_lite0", "--strategy", "feature-extract", "--classes", "10")
    assert "Total params: 3,383,818" in result.output
    assert "Trainable params: 12,810" in result.output and "Non-trainable params: 3,371,008" in result.output
    result = run("summary", "tf_efficientnet_lite0", "--strategy", "finetune")
    assert "Trainable params: 3,383,818" in result.output


def test_backbones_and_strategies_list(tmp_path):
    result = run("backbones", "efficientnet_lite")
    assert "tf_efficientnet_lite0" in result.output and "yes" in result.output
    result = run("strategies")
    for name in ("linear-probe", "feature-extract", "finetune", "partial", "truncate", "scratch"):
        assert name in result.output


@pytest.mark.parametrize(
    "args, expected",
    [
        (["train", "/no/such/folder"], "/no/such/folder"),
        (["train", "{data}", "--strategy", "magic"], "--strategy 'magic'"),
        (["train", "{data}", "--backbone", "resnet1800"], "Unknown backbone"),
        (["train", "{data}", "--epochs", "0"], "--epochs 0"),
        (["train", "{data}", "--precision", "fp8"], "--precision"),
        (["train", "{data}", "--strategy", "linear-probe", "--hidden", "64"], "leave out --hidden"),
        (["predict", "/no/such/run", "{image}"], "/no/such/run"),
        (["predict", "{data}", "{image}"], "not a complete graft model"),
        (["train", "{data}", "--crop-scale", "0"], "--crop-scale 0"),
        (["train", "{data}", "--hflip", "2"], "--hflip 2"),
        (["train", "{data}", "--weights", "/no/weights.safetensors"], "/no/weights.safetensors"),
        (["evaluate", "/no/such/run", "{data}"], "/no/such/run"),
    ],
)
def test_bad_input_is_one_clear_message(args, expected, tiny_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = sorted((tiny_dataset / "val" / "red").iterdir())[0]
    args = [a.format(data=tiny_dataset, image=image) for a in args]
    code, output = run_main(args, capsys, monkeypatch)
    assert code == 2
    assert expected in output and "Traceback" not in output


def test_summary_of_a_saved_run(trained):
    run_dir, _ = trained
    result = run("summary", run_dir)
    assert result.exit_code == 0 and "feature-extract" in result.output
    assert "Trainable params: 3,843" in result.output  # the head: 1280 x 3 + 3


def test_cache_ls_and_rm(tiny_dataset, tmp_path, fresh_cache):
    """A cache of its own (--cache-dir): the session's shared cache holds whatever other tests left."""
    from graft.features import FeatureCache

    cache = fresh_cache
    trained = run("train", tiny_dataset, "--strategy", "feature-extract", "--img-size", "32", "--head-epochs", "1",
                  "--views", "1", "--workers", "0", "--no-audit", "--no-report", "--out", tmp_path, "--cache-dir", cache)
    assert trained.exit_code == 0, trained.output
    keys = [entry.key for entry in FeatureCache(cache / "features").entries()]
    listing = run("cache", "ls", "--cache-dir", cache)
    # train (one view) and val features: inference is fp32 on every machine, so no second val entry
    assert len(keys) == 2 and "2 entries" in listing.output
    assert all(key in listing.output for key in keys)
    removed = run("cache", "rm", "--cache-dir", cache)
    assert "Removed" in removed.output and "0 entries" in run("cache", "ls", "--cache-dir", cache).output


@pytest.mark.slow
def test_demo_trains_on_the_embedded_cifar_sample(tmp_path):
    """The README's main job, at 32 px so that it runs in seconds here."""
    result = run("demo", "--img-size", "32", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "demo-linear-probe" / "graft.json").read_text())
    assert meta["classes"][:3] == ["airplane", "automobile", "bird"] and meta["data"]["counts"]["train"] == 2000
    assert meta["accuracy"]["val"] > 0.3  # ten classes: chance is 0.1
    assert "Results" in result.output


def test_summary_of_a_fine_tuned_run_counts_what_trained(tiny_dataset, tmp_path):
    """It printed "Trainable params: 3,843" (the head) for a fine-tuned run that trained everything."""
    run_dir = tmp_path / "ft"
    result = run("train", tiny_dataset, "--strategy", "finetune", "--img-size", "32", "--epochs", "1", "--head-epochs",
                 "1", "--views", "1", "--workers", "0", "--no-audit", "--no-report", "--out", tmp_path, "--name", "ft")
    assert result.exit_code == 0, result.output
    result = run("summary", run_dir)
    assert result.exit_code == 0 and "finetune" in result.output
    assert "Trainable params: 3,374,851" in result.output  # backbone 3,371,008 + head 3,843


def test_python_dash_m_graft_runs_the_command():
    """`python -m graft` is the `graft` script: benchmarks and users without the script on PATH call it."""
    import os
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "graft", "strategies"], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "linear-probe" in result.stdout and "probe-finetune" in result.stdout
