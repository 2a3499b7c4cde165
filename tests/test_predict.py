"""Batch prediction: files, folders and globs in; a CSV, JSON or lines out; every Python input kind."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graft.data.inputs import expand_inputs
from graft.errors import BadImageError
from graft.io import RUN_MARKER
from test_cli import run_main


@pytest.fixture
def photos(tiny_dataset, tmp_path):
    """photos/a.png, photos/nested/deeper/*.png, a hidden folder, a run folder and a text file."""
    root = tmp_path / "photos"
    val = sorted((tiny_dataset / "val" / "red").iterdir()) + sorted((tiny_dataset / "val" / "blue").iterdir())
    (root / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(val[0], root / "a.png")
    shutil.copy(val[1], root / "nested" / "b.png")
    shutil.copy(val[4], root / "nested" / "deeper" / "c.PNG")
    for skipped in (".hidden", "runs-old"):
        (root / skipped).mkdir()
        shutil.copy(val[2], root / skipped / "x.png")
    (root / "runs-old" / RUN_MARKER).touch()
    (root / "notes.txt").write_text("not an image")
    return root


def test_folders_globs_and_files_expand_recursively_and_once(photos, tmp_path):
    single = tmp_path / "single.png"
    shutil.copy(photos / "a.png", single)
    found, failed = expand_inputs([photos, str(photos / "**" / "*.png"), single, str(tmp_path / "none-*.jpg")])
    assert found == [photos / "a.png", photos / "nested" / "b.png", photos / "nested" / "deeper" / "c.PNG", single]
    assert [str(bad.path) for bad in failed] == [str(tmp_path / "none-*.jpg")]
    glob_only, _ = expand_inputs([str(photos / "nested" / "*.png")])
    assert glob_only == [photos / "nested" / "b.png"]


def test_csv_has_top_k_columns_and_names_the_corrupt_file(linear_probe_run, photos, tmp_path, capsys, monkeypatch):
    broken = photos / "nested" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    target = tmp_path / "out" / "predictions.csv"
    target.parent.mkdir()
    code, output = run_main(["predict", linear_probe_run.run_dir, photos, "--csv", target, "--top-k", "2"], capsys, monkeypatch)
    assert code == 1 and "Traceback" not in output and f"not read: {broken}" in output
    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "label", "probability", "class_2", "probability_2", "error"]
    assert [row["path"] for row in rows] == [str(photos / "a.png"), str(photos / "nested" / "b.png"), str(broken),
                                             str(photos / "nested" / "deeper" / "c.PNG")]
    bad = rows[2]
    assert bad["error"] and bad["label"] == "" and bad["probability"] == ""
    for row in (rows[0], rows[1], rows[3]):
        assert row["error"] == "" and row["label"] in linear_probe_run.classifier.classes
        assert row["class_2"] in linear_probe_run.classifier.classes and row["class_2"] != row["label"]
        assert 1 >= float(row["probability"]) >= float(row["probability_2"]) >= 0
    assert [p.name for p in target.parent.iterdir()] == ["predictions.csv"]  # no temporary file left


def test_json_lists_answers_and_errors(linear_probe_run, photos, tmp_path, capsys, monkeypatch):
    missing = tmp_path / "missing.png"
    code, output = run_main(["predict", linear_probe_run.run_dir, str(photos / "*.png"), missing, "--json"], capsys, monkeypatch)
    assert code == 1
    stdout = output[: output.rindex("]") + 1]
    answers = json.loads(stdout)
    assert answers[0]["path"] == str(photos / "a.png") and len(answers[0]["top"]) == 3
    assert answers[1]["path"] == str(missing) and "not found" in answers[1]["error"]


def test_every_input_kind_gives_the_same_answer(linear_probe_run, tiny_dataset):
    path = sorted((tiny_dataset / "val" / "green").iterdir())[0]
    classifier = linear_probe_run.classifier
    expected = classifier.predict(path)
    assert isinstance(expected, list) and len(expected) == 1 and expected[0].error is None
    label = expected[0].label
    pixels = np.asarray(Image.open(path).convert("RGB"))
    grey_picture = np.asarray(Image.open(path).convert("L"))
    kinds = [str(path), Path(path), Image.open(path), pixels, path.read_bytes(), bytearray(path.read_bytes())]
    answers = classifier.predict(kinds, top_k=2)
    assert [a.label for a in answers] == [label] * len(kinds)
    assert [a.probability for a in answers] == pytest.approx([expected[0].probability] * len(kinds), abs=1e-4)
    for single in kinds:
        assert classifier.predict(single)[0].label == label
    batch = classifier.predict(np.stack([pixels, pixels]))
    assert [a.label for a in batch] == [label, label]
    grey = classifier.predict(grey_picture)[0]
    assert grey.error is None and len(grey.top) == 3  # a grey picture is answered (its colour class may differ)
    assert classifier.predict(np.asarray(Image.open(path).convert("RGB").convert("L").convert("RGB")))[0].label == grey.label


def test_bad_items_in_a_list_are_answers_and_a_single_bad_item_raises(linear_probe_run, tiny_dataset):
    path = sorted((tiny_dataset / "val" / "red").iterdir())[0]
    answers = linear_probe_run.classifier.predict([path, b"not an image", np.zeros((4, 4), np.float32), path])
    assert [a.error is None for a in answers] == [True, False, False, True]
    assert answers[1].top == [] and answers[1].label == "" and "error" in answers[1].to_dict()
    assert answers[0].to_dict()["label"] == answers[0].label
    with pytest.raises(BadImageError):
        linear_probe_run.classifier.predict(b"not an image")
    assert linear_probe_run.classifier.predict([]) == []


def test_tta_gives_probabilities_that_sum_to_one(linear_probe_run, tiny_dataset, tmp_path, capsys, monkeypatch):
    images = sorted((tiny_dataset / "val" / "blue").iterdir())[:2]
    answers = linear_probe_run.classifier.predict(images, top_k=10, tta=True)
    for answer in answers:
        assert sum(p for _, p in answer.top) == pytest.approx(1.0, abs=1e-4)
    target = tmp_path / "tta.csv"
    code, output = run_main(["predict", linear_probe_run.run_dir, *images, "--tta", "--csv", target], capsys, monkeypatch)
    assert code == 0, output
    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    assert all(float(r["probability"]) + float(r["probability_2"]) + float(r["probability_3"]) == pytest.approx(1, abs=1e-4)
               for r in rows)


def test_evaluate_tta_judges_each_image_as_predict_tta_does(linear_probe_run, tiny_dataset, capsys, monkeypatch):
    classifier = linear_probe_run.classifier
    evaluation, rows = classifier.evaluate_images(tiny_dataset / "val", tta=True)
    _, plain_rows = classifier.evaluate_images(tiny_dataset / "val")
    answers = {a.path: a for a in classifier.predict([row["path"] for row in rows], top_k=1, tta=True)}
    for row in rows:
        assert row["predicted"] == answers[row["path"]].label
        assert row["probability"] == pytest.approx(answers[row["path"]].probability, abs=1e-5)
    assert any(abs(r["probability"] - p["probability"]) > 1e-4 for r, p in zip(rows, plain_rows))  # the mirror counts
    assert evaluation.accuracy == sum(r["predicted"] == r["true"] for r in rows) / len(rows)
    code, output = run_main(["evaluate", linear_probe_run.run_dir, tiny_dataset / "val", "--tta", "--output",
                             linear_probe_run.run_dir.parent / "tta-eval.json"], capsys, monkeypatch)
    assert code in (0, None), output
    assert json.loads((linear_probe_run.run_dir.parent / "tta-eval.json").read_text())["tta"] is True


def test_evaluate_writes_per_image_predictions_and_never_overwrites(linear_probe_run, tiny_dataset, capsys, monkeypatch):
    run_dir = linear_probe_run.run_dir
    for _ in range(2):
        code, output = run_main(["evaluate", run_dir, tiny_dataset / "val"], capsys, monkeypatch)
        assert code in (0, None), output
    first, second = run_dir / "evaluation.json", run_dir / "evaluation-2.json"
    assert first.exists() and second.exists()
    assert json.loads(first.read_text())["predictions"] == str(run_dir / "evaluation-predictions.csv")
    with (run_dir / "evaluation-2-predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "true", "predicted", "probability"] and len(rows) == 12
    assert {row["true"] for row in rows} == {"red", "green", "blue"}
    accuracy = json.loads(second.read_text())["accuracy"]
    assert accuracy == pytest.approx(sum(r["true"] == r["predicted"] for r in rows) / len(rows))


def test_a_bytes_stream_input_is_read(linear_probe_run, tiny_dataset):
    path = sorted((tiny_dataset / "val" / "red").iterdir())[0]
    buffer = io.BytesIO()
    Image.open(path).save(buffer, format="JPEG", quality=95)
    answer = linear_probe_run.classifier.predict(buffer.getvalue())[0]
    assert answer.error is None and answer.label in linear_probe_run.classifier.classes


def test_no_samples_give_an_empty_answer_with_one_column_per_class(linear_probe_run):
    """Bug: the empty answer was sized by the number of the head's tensors (weight, bias), not classes."""
    from graft.classifier import predict_logits
    from graft.runtime import Runtime

    classifier = linear_probe_run.classifier
    logits = predict_logits(classifier.model, [], classifier.data_config, runtime=Runtime(progress=False))
    assert logits.shape == (0, len(classifier.classes)) == (0, 3)


def test_predicting_a_run_in_torch_reads_its_weights_once(linear_probe_run, tiny_dataset, capsys, monkeypatch, tmp_path):
    """Bug: where torch predicts a run folder, the weights were hashed twice (once to decide the engine,
    once to load them). Hashing them is a full read of the file: once is the check."""
    import sys

    import graft.io
    from graft.engines import choice

    real, hashed = graft.io.file_sha256, []

    def counting(path):
        hashed.append(Path(path).name)
        return real(path)

    for module in [m for name, m in sys.modules.items() if name.startswith("graft")]:
        if getattr(module, "file_sha256", None) is real:
            monkeypatch.setattr(module, "file_sha256", counting)
    monkeypatch.setattr(choice, "GPU_DEVICE_FILES", (str(tmp_path),))  # "a GPU is here": torch predicts
    image = sorted((tiny_dataset / "val" / "red").iterdir())[0]
    code, output = run_main(["predict", linear_probe_run.run_dir, image], capsys, monkeypatch)
    assert code in (0, None) and "red" in output, output
    assert hashed.count("model.safetensors") == 1


def test_top_k_0_is_refused(linear_probe_run, tiny_dataset, capsys, monkeypatch):
    """`--top-k 0` showed one class, silently (issue 24)."""
    image = sorted((tiny_dataset / "val" / "red").iterdir())[0]
    code, output = run_main(["predict", linear_probe_run.run_dir, image, "--top-k", "0"], capsys, monkeypatch)
    assert code == 2 and "--top-k 0: use 1 or more" in output and "Traceback" not in output


def test_ctrl_c_during_predict_says_what_was_kept(linear_probe_run, tiny_dataset, tmp_path, capsys, monkeypatch):
    """Ctrl-C exited 130 with no message (issue 24): now it says how far it got and that the CSV was not kept."""
    from graft.prediction import Prediction

    images = sorted((tiny_dataset / "val" / "red").iterdir())[:3]
    rows = Prediction.csv_row
    written = []

    def interrupted(self, columns, *args, **options):
        if written:
            raise KeyboardInterrupt  # Ctrl-C while the second answer is written
        written.append(self)
        return rows(self, columns, *args, **options)

    monkeypatch.setattr(Prediction, "csv_row", interrupted)
    target = tmp_path / "answers.csv"
    code, output = run_main(["predict", linear_probe_run.run_dir, *images, "--csv", target], capsys, monkeypatch)
    assert code == 130 and "Traceback" not in output
    assert "interrupted: after 1 of 3 images" in output and f"{target} was not written" in output, output
    assert not list(tmp_path.iterdir())  # neither the CSV nor a temporary file


def test_ctrl_c_while_the_model_is_opened_says_nothing_was_written(linear_probe_run, tiny_dataset, tmp_path, capsys,
                                                                    monkeypatch):
    """The first predict of a run may export it first (seconds): Ctrl-C then exited 130 with no word."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("graft.loader.open_predictor", interrupted)
    image = sorted((tiny_dataset / "val" / "red").iterdir())[0]
    code, output = run_main(["predict", linear_probe_run.run_dir, image, "--csv", tmp_path / "a.csv"], capsys,
                            monkeypatch)
    assert code == 130 and "interrupted: while the model was being opened" in output and "nothing was written" in output
    assert not list(tmp_path.iterdir())
