"""Every run writes a report: curves, confusion matrices, per-class metrics, the most confident
mistakes with their maps, and the data audit, as self-contained HTML and as Markdown + PNGs."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil

import pytest

import graft
from conftest import COLOURS, make_image
from conftest import FAST as FAST_RUN
from graft.advise import Advice, StageEvidence
from graft.report import write_report
from graft.strategies import get_strategy

# conftest's FAST run with the report and the audit, which this file tests, and a few more head epochs
FAST = {**FAST_RUN, "head_epochs": 3, "batch_size": 8, "report": True, "audit": True}


@pytest.fixture(scope="module")
def planted(tiny_dataset, tmp_path_factory):
    """tiny_dataset plus a test split, and one red image filed under val/blue: a planted mistake."""
    root = tmp_path_factory.mktemp("planted") / "data"
    shutil.copytree(tiny_dataset, root)
    for index, (name, colour) in enumerate(COLOURS.items()):
        for copy in range(2):
            make_image(root / "test" / name / f"{copy}.png", color=colour, seed=500 + 2 * index + copy)
    make_image(root / "val" / "blue" / "planted.png", color=COLOURS["red"], seed=999)
    return root


@pytest.fixture(scope="module")
def runs(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return {
        "feature-extract": graft.train(planted, strategy="feature-extract", out=out, name="fe", **FAST),
        "finetune": graft.train(planted, strategy="finetune", out=out, name="ft", **FAST),
    }


@pytest.mark.parametrize("strategy", ["feature-extract", "finetune"])
def test_report_has_every_section_and_inline_figures(runs, strategy):
    run = runs[strategy]
    page = (run.run_dir / "report.html").read_text()
    for section in ("Training curves", "Validation: accuracy", "Test: accuracy", "Most confident mistakes",
                    "Data audit", "precision", "recall", strategy, "tf_efficientnet_lite0"):
        assert section in page, section
    figures = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(figures) >= 4  # curves, two confusion matrices, mistakes (+ audit thumbnails)
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in figures)
    assert 'src="report/' not in page and "<img src=\"http" not in page  # nothing outside the file

    markdown = (run.run_dir / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", markdown)
    assert {"report/curves.png", "report/confusion-val.png", "report/confusion-test.png", "report/mistakes.png"} <= set(linked)
    assert all((run.run_dir / path).stat().st_size > 5000 for path in linked)
    assert "## Data audit" in markdown and "| class | precision | recall | F1 | images |" in markdown

    audit = json.loads((run.run_dir / "audit.json").read_text())
    assert {"findings", "duplicates", "mislabelled"} <= set(audit)
    timings = json.loads((run.run_dir / "metrics.json").read_text())["timings"]
    assert timings["audit_s"] > 0 and timings["report_s"] > 0


def test_planted_mistake_is_the_most_confident_one(runs):
    markdown = (runs["feature-extract"].run_dir / "report.md").read_text()
    mistakes = markdown.split("## Most confident mistakes")[1].split("\n## ")[0]
    rows = [line for line in mistakes.splitlines() if line.startswith("| `")]
    assert rows and rows[0].startswith("| `val/blue/planted.png` | blue | red |")


def test_no_report_and_no_audit(planted, tmp_path):
    run = graft.train(planted, strategy="linear-probe", out=tmp_path, **{**FAST, "report": False, "audit": False})
    assert not any((run.run_dir / name).exists() for name in ("report.html", "report.md", "report", "audit.json"))
    assert {"report_s", "audit_s"}.isdisjoint(json.loads((run.run_dir / "metrics.json").read_text())["timings"])


def test_report_says_what_is_missing_and_why(runs, tmp_path):
    """linear-probe has no epochs, scratch no pretrained features to audit, auto its advice: in words."""
    run = runs["feature-extract"]
    record, metrics = run.record, run.metrics
    write_report(tmp_path, record=dataclasses.replace(record, strategy="linear-probe"),
                 metrics=dataclasses.replace(metrics, history=[], logreg_c=0.03), strategy=get_strategy("linear-probe"))
    assert "no epochs to plot" in (tmp_path / "report.html").read_text()
    advice = Advice(case=4, size="large", similarity="different", images_per_class=900.0, train_images=4500, strategy="scratch", cut=None,
                    unfreeze=None, lr=0.003, backbone_lr_ratio=1.0, best_stage=1, reasons=["nothing like ImageNet"],
                    stages=[StageEvidence(index=0, channels=16, bn_drift=0.25, probe_accuracy=0.412)])
    write_report(tmp_path, record=dataclasses.replace(record, strategy="scratch", advice=advice.to_dict()), metrics=metrics,
                 strategy=get_strategy("scratch"), mistakes=[])
    page = (tmp_path / "report.html").read_text()
    assert "graft audit DATA" in page and "No mistakes" in page
    assert "--strategy auto" in page and "Case 4: large data" in page and "<li>nothing like ImageNet</li>" in page
    assert "41.2%" in page and "backbone lr ratio" in page


def test_train_command_has_the_report_flags():
    from typer.testing import CliRunner

    from graft.cli.main import app

    output = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "--no-report" in output and "--no-audit" in output


def test_why_this_strategy_argues_for_what_the_run_did(runs, tmp_path):
    """The report's "Why this strategy" argued for `truncate --cut 0` (the course's recipe for case 2)
    while auto had run linear-probe (issue 24): it now gives auto's reasons for what ran, and names the
    recipe as the course's."""
    from graft.advise import recommend
    from graft.advise.auto import auto_plan

    run = runs["feature-extract"]
    stages = [StageEvidence(index=i, channels=8, bn_drift=0.5, probe_accuracy=1.0) for i in range(3)]  # a tie
    advice = recommend(2, stages=stages, best=0, reasons=["drift at least 0.35"], images_per_class=56, train_images=280)
    plan = auto_plan(advice)
    assert (advice.strategy, advice.cut, plan.strategy) == ("truncate", 0, "linear-probe")
    record = dataclasses.replace(run.record, strategy="linear-probe",
                                 advice={**advice.to_dict(), "auto": {"strategy": plan.strategy, "reasons": plan.reasons}})
    write_report(tmp_path, record=record, metrics=run.metrics, strategy=get_strategy("linear-probe"), mistakes=[])
    page = (tmp_path / "report.md").read_text()
    why = page[page.index("## Why this strategy"):]
    assert why.index("auto trained `linear-probe`") < why.index(plan.reasons[0]) < why.index("course's recipe")
    assert "The course's recipe for case 2 is `truncate --cut 0`; auto trained `linear-probe` instead" in why
    assert "so: truncate" not in page and "| strategy | truncate" not in why



def test_a_diverged_run_is_an_error_in_the_cli_and_in_the_report(tiny_dataset, tmp_path, capsys, monkeypatch):
    """`--lr 1e9` trained to chance with exit 0 and no word (issue 24): the loss blew up to finite values,
    which the NaN check does not see. The CLI now says what happened and what to do, and exits 1; the
    report says it at its top."""
    from test_cli import run_main

    code, output = run_main(["train", tiny_dataset, "--strategy", "feature-extract", "--lr", "1e9", "--img-size", "32",
                             "--head-epochs", "2", "--views", "1", "--workers", "0", "--no-audit", "--out", tmp_path,
                             "--name", "wild"], capsys, monkeypatch)
    assert code == 1 and "Traceback" not in output, output
    assert "error: Training diverged: the training loss reached" in output and "(--lr 1e+09)" in output
    assert "train again with a lower --lr" in output
    assert output.count("Report: ") == 1  # the run says where its report is; the CLI no longer says it again
    assert (tmp_path / "wild" / "model.safetensors").exists()  # saved, to look at
    assert "<strong>Error</strong>: Training diverged" in (tmp_path / "wild" / "report.html").read_text()


def test_a_run_that_learnt_has_no_problems_and_one_at_chance_is_warned(linear_probe_run):
    from graft.evaluation import evaluate_predictions
    from graft.report.health import training_problems

    metrics, classes = linear_probe_run.metrics, linear_probe_run.record.classes
    assert training_problems(metrics, classes) == []
    constant = evaluate_predictions([0, 0, 1, 2], [0, 0, 0, 0], classes)  # always the first class
    problems = training_problems(dataclasses.replace(metrics, evaluations={"val": constant}), classes)
    assert [p.kind for p in problems] == ["chance"] and not problems[0].is_error
    assert f"answering '{classes[0]}' for every image scores (2 of 4 val images)" in problems[0].message
