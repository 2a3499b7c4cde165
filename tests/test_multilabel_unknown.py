"""A multi-label run learns how unlike its training images an image is, as a single-label run does
(graft.unknown's knn score reads no labels), and every way of predicting answers `unknown` above the
threshold set on val, its labels still beside it (issues 25 and 26)."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest

import graft
from conftest import FAST
from graft.model_files import UNKNOWN_FILE, read_record, read_unknown
from test_cli import run_main
from test_unknown_runs import checkerboard, save_png, saved_without_score, stripes

RECALL = 0.9  # tiny_multilabel's val (split off by graft) is too small to leave one image in twenty out
UNLIKE = "unlike every training image"


@pytest.fixture(scope="module")
def scored(tiny_multilabel, tmp_path_factory):
    """A linear probe on several labels per image with its score of unknown images, and what it said."""
    said: list[str] = []
    result = graft.train(tiny_multilabel, strategy="linear-probe", out=tmp_path_factory.mktemp("ml-unknown"), name="ml",
                         known_recall=RECALL, **{**FAST, "head_epochs": 8, "log": said.append})
    return result, said


@pytest.fixture(scope="module")
def images(tiny_multilabel):
    """Every image of the data (train and val): all known."""
    return sorted((tiny_multilabel.parent / "images").glob("*.png"))


def test_a_multilabel_run_stores_its_score_of_unknown_images(scored):
    result, said = scored
    record, folder = read_record(result.run_dir)
    assert record.task == "multilabel" and record.unknown is not None and record.unknown["kind"] == "knn"
    assert record.unknown["known_recall"] == RECALL and (folder / UNKNOWN_FILE).is_file()
    score = read_unknown(folder, record)
    assert score is not None and score.val_images == record.data.counts["val"] and score.val_kept >= RECALL
    assert score.tensors()["unknown.train"].shape[0] == record.data.counts["train"]
    assert "unknown_s" in result.metrics.timings
    assert any(line.startswith("Unknown images: knn score") for line in said), said
    assert not any("no score of unknown images" in line for line in said), said


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_an_image_unlike_the_training_data_is_answered_unknown_with_its_labels(scored, images, engine):
    result, _ = scored
    model = graft.load(result.run_dir, engine=engine)
    answers = model.predict([*images, checkerboard(), stripes()])
    assert model.engine == engine and all(answer.unknown is not None for answer in answers)
    familiar, strange = answers[: len(images)], answers[len(images):]
    assert all(answer.unknown for answer in strange), [answer.unknown_score for answer in strange]
    # the training images are their own nearest neighbours; the threshold leaves out 10% of val at most
    assert sum(answer.unknown for answer in familiar) <= 3, [a.unknown_score for a in familiar if a.unknown]
    assert all(answer.labels is not None and answer.probabilities for answer in strange)  # still answered
    text = "\n".join(strange[0].lines())
    assert f"unknown: {UNLIKE}" in text and "labels: " in text
    unknown = strange[0].to_dict()
    assert unknown["unknown"] is True and unknown["answer"] == UNLIKE and unknown["labels"] == strange[0].labels
    assert unknown["unknown_score"] > model.unknown.threshold
    known = next(answer for answer in familiar if not answer.unknown and answer.labels)
    assert known.to_dict()["answer"] == ", ".join(known.labels) and "unknown" not in "\n".join(known.lines())


def test_graft_predict_csv_and_json_carry_the_unknown_answer(scored, images, tmp_path, capsys, monkeypatch):
    result, _ = scored
    strange = save_png(checkerboard(), tmp_path / "checkerboard.png")
    target = tmp_path / "answers.csv"
    code, output = run_main(["predict", result.run_dir, images[0], strange, "--csv", target], capsys, monkeypatch)
    assert code in (0, None), output
    rows = list(csv.reader(target.open()))
    classes = result.record.classes
    assert rows[0] == ["path", "labels", *(f"probability_{name}" for name in classes), "error", "unknown",
                       "unknown_score"]
    assert rows[2][0].endswith("checkerboard.png") and rows[2][-2] == "true"
    assert float(rows[2][-1]) > result.record.unknown["threshold"]
    assert rows[1][-2] in ("true", "false") and float(rows[1][-1]) < float(rows[2][-1])
    code, output = run_main(["predict", result.run_dir, strange, "--json"], capsys, monkeypatch)
    answer = json.loads(output)[0]
    assert code in (0, None) and answer["unknown"] is True and answer["answer"] == UNLIKE and "labels" in answer
    code, output = run_main(["predict", result.run_dir, strange], capsys, monkeypatch)
    assert code in (0, None) and UNLIKE in output


def test_graft_evaluate_writes_the_unknown_columns(scored, tiny_multilabel, tmp_path, capsys, monkeypatch):
    result, _ = scored
    code, output = run_main(["evaluate", result.run_dir, tiny_multilabel, "-o", tmp_path / "e.json"], capsys,
                            monkeypatch)
    assert code in (0, None), output
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["unknown"]["images"] == 72 and saved["unknown"]["unknown"] <= 3 and "Called unknown (unlike every training image)" in output
    with (tmp_path / "e-predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[-2:] == ["unknown", "unknown_score"]
    assert sum(row["unknown"] == "true" for row in rows) == saved["unknown"]["unknown"]
    assert all(row["unknown"] == ("true" if float(row["unknown_score"]) > saved["unknown"]["threshold"] else "false")
               for row in rows)


def test_an_onnx_export_answers_unknown_as_the_run_does(scored, images, tmp_path):
    from graft.export import export

    result, _ = scored
    out = tmp_path / "model.onnx"
    exported = export(graft.load(result.run_dir), out, format="onnx", log=None)
    assert exported.parity.label_agreement == 1.0 and exported.parity.unknown_agreement == 1.0
    info = json.loads(exported.metadata_path.read_text())
    assert info["task"] == "multilabel" and info["unknown"]["threshold"] == result.record.unknown["threshold"]
    sample = [*images[:12], checkerboard(), stripes()]
    ours, theirs = graft.load(result.run_dir, engine="torch").predict(sample), graft.load(out).predict(sample)
    assert [a.unknown for a in theirs] == [a.unknown for a in ours] and theirs[-1].unknown and theirs[-2].unknown
    assert np.allclose([a.unknown_score for a in theirs], [a.unknown_score for a in ours], atol=1e-3)
    assert [a.labels for a in theirs] == [a.labels for a in ours]


def test_a_multilabel_run_without_a_score_answers_as_before(scored, images, tmp_path):
    """A multi-label run saved before graft scored them (no `unknown`): no unknown answer, no columns."""
    result, _ = scored
    folder = saved_without_score(result.run_dir, tmp_path / "old")
    model = graft.load(folder, engine="torch")
    answer = model.predict([checkerboard()])[0]
    assert answer.unknown is None and set(answer.to_dict()) == {"path", "labels", "probabilities", "top"}
    assert model.evaluation_columns()[-1] == f"probability_{model.classes[-1]}"
    assert answer.csv_row(1, model.classes)[-1] == ""  # ends with error: no unknown columns


def test_the_server_answers_unknown_with_the_labels(scored, images):
    from fastapi.testclient import TestClient

    from graft.serve import create_app

    result, _ = scored
    model = graft.load(result.run_dir)
    buffer = io.BytesIO()
    from PIL import Image

    Image.fromarray(checkerboard()).save(buffer, format="PNG")
    expected = model.predict(images[0])[0]
    with TestClient(create_app(model)) as client:
        strange, known = (client.post("/predict", content=content).json()["predictions"][0]
                          for content in (buffer.getvalue(), images[0].read_bytes()))
    assert strange["unknown"] is True and strange["answer"] == UNLIKE and isinstance(strange["labels"], list)
    assert known["unknown"] is expected.unknown and known["labels"] == expected.labels
    assert known["answer"] == expected.verdict


def test_the_page_says_an_image_is_unlike_every_training_image(scored, tmp_path):
    """graft serve's page in Chromium: the heading says "unlike every training image" and the note
    gives the score and the labels the model would otherwise give."""
    pytest.importorskip("fastapi")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium executable on PATH (Debian: apt-get install chromium)")
    from conftest import uvicorn_in_thread
    from graft.serve import create_app

    result, _ = scored
    image = save_png(checkerboard(), tmp_path / "checkerboard.png")
    model = graft.load(result.run_dir)
    expected = model.predict(image)[0]
    assert expected.unknown
    app = create_app(model, name="ml")
    try:
        with uvicorn_in_thread(app) as base, playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 800})
                page.goto(base)
                page.set_input_files("#file", str(image))
                card = page.locator("article.card").first
                playwright_api.expect(card.locator("[data-testid=unknown]")).to_have_text(UNLIKE, timeout=30_000)
                note = card.locator("[data-testid=unknown-note]")
                playwright_api.expect(note).to_contain_text(
                    f"Its labels otherwise: {', '.join(expected.labels or []) or 'none'}.")
            finally:
                browser.close()
    finally:
        app.state.batcher.close()
