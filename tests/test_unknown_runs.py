"""A run learns how unlike its training images an image is (graft.unknown) and keeps that score with
the model; its predictions answer "none of the N classes" above the threshold set on val (issue 26)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import graft
from conftest import FAST
from graft.errors import GraftError
from graft.model_files import META_FILE, UNKNOWN_FILE, read_record, read_unknown
from test_cli import run_main

# tiny_dataset's val holds 12 images: a threshold keeping 90% of them leaves one out (95% needs 20)
RECALL = 0.9


@pytest.fixture(scope="module")
def scored_run(tiny_dataset, tmp_path_factory):
    """A linear-probe run on the three plain colours, with its score of unknown images."""
    out = tmp_path_factory.mktemp("unknown-run")
    return graft.train(tiny_dataset, strategy="linear-probe", out=out, name="scored", known_recall=RECALL, **FAST)


def test_a_run_stores_its_score_of_unknown_images_beside_the_weights(scored_run):
    folder = scored_run.run_dir
    record, _ = read_record(folder)
    assert record.unknown is not None and record.unknown["kind"] == "knn"
    assert record.unknown["known_recall"] == RECALL and record.config.data.known_recall == RECALL
    assert (folder / UNKNOWN_FILE).is_file()
    assert json.loads((folder / META_FILE).read_text())["unknown_sha256"]
    score = read_unknown(folder, record)
    assert score is not None and score.val_images == 12 and score.val_kept >= RECALL
    assert score.tensors()["unknown.train"].shape[0] == 36  # every training image, centred at length 1
    assert "unknown_s" in scored_run.metrics.timings


def test_replaced_score_arrays_are_refused(scored_run, tmp_path):
    import shutil

    from graft.errors import ModelFileError

    copy = tmp_path / "copy"
    shutil.copytree(scored_run.run_dir, copy)
    data = bytearray((copy / UNKNOWN_FILE).read_bytes())
    data[-1] ^= 0xFF  # one value of the arrays changed
    (copy / UNKNOWN_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="unknown.safetensors"):
        read_record(copy)


def test_a_known_recall_outside_zero_to_one_is_refused_clearly(tiny_dataset, tmp_path, capsys, monkeypatch):
    with pytest.raises(GraftError, match=r"--known-recall 1\.5: a share strictly between 0 and 1"):
        graft.train(tiny_dataset, strategy="linear-probe", out=tmp_path, known_recall=1.5, **FAST)
    code, output = run_main(["train", tiny_dataset, "--known-recall", "1.5", "--out", tmp_path], capsys, monkeypatch)
    assert code == 2 and "--known-recall 1.5: a share strictly between 0 and 1" in output
    assert "Traceback" not in output


def test_too_few_val_images_for_the_recall_leave_no_score_and_say_why(linear_probe_run):
    record, folder = read_record(linear_probe_run.run_dir)  # --known-recall 0.95 needs 20 val images; there are 12
    assert record.unknown is None and not (folder / UNKNOWN_FILE).exists()
    assert read_unknown(folder, record) is None


def checkerboard(size: int = 40, square: int = 5) -> np.ndarray:
    """Black and white squares: nothing like the plain colours the run learnt."""
    cells = (np.indices((size, size)) // square).sum(axis=0) % 2
    return np.repeat((cells * 255).astype(np.uint8)[..., None], 3, axis=2)


def noise(seed: int = 0, size: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def save_png(array: np.ndarray, path):
    Image.fromarray(array).save(path)
    return path


def test_a_fine_tuned_run_fits_its_score_on_its_own_backbones_embeddings(tiny_dataset, tmp_path):
    result = graft.train(tiny_dataset, strategy="finetune", out=tmp_path, name="tuned", known_recall=RECALL, **FAST)
    record, folder = read_record(result.run_dir)
    score = read_unknown(folder, record)
    assert score is not None and score.val_images == 12
    # the embeddings are the trained backbone's, not the frozen features in the cache
    from graft.classifier import Classifier

    classifier = Classifier(result.classifier.model, record.classes, record, engine="torch")
    pixels = np.stack([classifier.read(path) for path in sorted((tiny_dataset / "train" / "red").iterdir())[:2]])
    import torch

    with torch.inference_mode():
        own = result.classifier.model.backbone.eval()(torch.from_numpy(pixels)).numpy()
    assert np.allclose(score.score(own), 0.0, atol=1e-3)  # each training image is its own nearest neighbour
