"""Several labels per image through the one run loop (issue 25): every strategy learns a generated
multi-label set with a sigmoid per class, the best epoch by val mAP, each class's threshold chosen on
val and kept in graft.json. (Split from tests/test_multilabel.py so that pytest-xdist's --dist loadfile
can give the two halves to two workers.)"""

from __future__ import annotations

import json

import pytest

import graft
from conftest import FAST
from graft.evaluation import MultiLabelEvaluation

# enough epochs for the SGD heads to learn three colours from 57 training images
LEARN = {**FAST, "head_epochs": 8, "epochs": 2}


@pytest.fixture(scope="module")
def runs(tiny_multilabel, tmp_path_factory):
    out = tmp_path_factory.mktemp("multilabel-runs")
    return {name: graft.train(tiny_multilabel, strategy=name, out=out, name=name, **LEARN)
            for name in ("linear-probe", "feature-extract", "finetune")}


@pytest.mark.parametrize("name", ["linear-probe", "feature-extract", "finetune"])
def test_each_strategy_learns_several_labels_per_image(runs, name):
    run = runs[name]
    val = run.metrics.val
    assert isinstance(val, MultiLabelEvaluation) and run.record.task == "multilabel"
    assert val.map_macro >= 0.9 and run.metrics.val_accuracy == val.map_macro  # the primary figure is mAP
    assert val.exact_match >= 0.5 and set(val.per_class) == {"blue", "green", "red"}
    thresholds = run.record.thresholds["per_class"]
    assert set(thresholds) == {"blue", "green", "red"} and all(0 < row["threshold"] < 1 for row in thresholds.values())
    saved = json.loads((run.run_dir / "metrics.json").read_text())
    assert saved["evaluations"]["val"]["task"] == "multilabel" and saved["val_accuracy"] == pytest.approx(val.map_macro)


def test_fits_follow_val_map_and_the_probe_fits_one_logistic_regression_per_class(runs):
    head_epochs = [row for row in runs["feature-extract"].history if row.phase == "head"]
    assert head_epochs and all(row.val_map is not None for row in head_epochs)  # early stopping's figure
    images = [row for row in runs["finetune"].history if row.phase == "images"]
    assert images and all(0 <= row.val_map <= 1 for row in images)
    probe = runs["linear-probe"].classifier.model.head
    assert probe[-1].out_features == 3 and runs["linear-probe"].metrics.logreg_c is not None


@pytest.mark.slow  # four more runs
@pytest.mark.parametrize("name", ["partial", "truncate", "probe-finetune", "scratch"])
def test_the_other_strategies_train_several_labels_per_image(tiny_multilabel, tmp_path, name):
    run = graft.train(tiny_multilabel, strategy=name, out=tmp_path, name=name, **LEARN)
    val = run.metrics.val
    assert isinstance(val, MultiLabelEvaluation) and run.record.task == "multilabel"
    assert set(run.record.thresholds["per_class"]) == {"blue", "green", "red"}
    phase = "head" if name == "truncate" else "images"  # truncate trains a head on a frozen, cut base
    epochs = [row for row in run.history if row.phase == phase]
    assert epochs and all(0 <= row.val_map <= 1 for row in epochs)  # its fit followed val mAP
    # a pretrained base (whole or cut) tells three colours apart; random weights (scratch) in 2 epochs beat chance
    assert val.map_macro >= (0.85 if name != "scratch" else 0.4), (name, val.map_macro)
