"""graft compare: the same budget for every strategy, one table, two readable plots."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import FAST as FAST_RUN
from graft.cli.main import app
from graft.compare import compare
from graft.errors import GraftError

# conftest's FAST run, but for the epochs compare sets itself
FAST = {name: value for name, value in FAST_RUN.items() if name not in ("epochs", "head_epochs")}


@pytest.fixture(scope="module")
def comparison(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    return compare(tiny_dataset, strategies=["linear-probe", "feature-extract", "finetune", "scratch"], epochs=2,
                   head_epochs=4, out=out, name="c", **FAST)


@pytest.mark.slow
def test_every_strategy_gets_the_same_epochs_and_a_row(comparison):
    rows = {row.strategy: row for row in comparison.rows}
    assert list(rows) == ["linear-probe", "feature-extract", "finetune", "scratch"]
    for name in ("feature-extract", "finetune", "scratch"):
        assert rows[name].epochs_run == 2, (name, rows[name].curve)  # early stopping is off: all epochs run
        assert rows[name].epoch_time_s > 0
    assert rows["finetune"].curve[0][0] == 0  # the head it started from
    assert rows["linear-probe"].epoch_time_s is None and len(rows["linear-probe"].curve) == 1
    # The course's finding: with the same epochs, pretrained strategies are far ahead of scratch.
    assert rows["scratch"].val_acc_last < min(rows[n].best_val_acc for n in ("linear-probe", "feature-extract", "finetune"))
    # What trains: the head alone when frozen, everything for finetune and scratch.
    assert rows["feature-extract"].trainable_params < rows["finetune"].trainable_params == rows["scratch"].trainable_params
    assert all(row.peak_rss_mb and row.peak_rss_mb > 50 for row in comparison.rows)


@pytest.mark.slow
def test_table_json_and_plots_are_written(comparison):
    folder = comparison.folder
    table = (folder / "compare.md").read_text()
    assert "| strategy | val acc @ 1 epoch | val acc @ 2 epochs |" in table
    assert table.count("\n| ") == 1 + 4 + 1 - 1  # header, separator is "|---", four rows
    saved = json.loads((folder / "compare.json").read_text())
    assert [row["strategy"] for row in saved["strategies"]] == [row.strategy for row in comparison.rows]
    for picture in ("accuracy.png", "time.png"):
        with Image.open(folder / picture) as image:
            assert image.size[0] > 600 and image.size[1] > 300
    for row in comparison.rows:  # each strategy's own run folder, loadable like any other
        assert (folder / row.strategy / "model.safetensors").exists()


def test_bad_strategy_lists_are_refused_before_training(tiny_dataset, tmp_path):
    with pytest.raises(GraftError, match="--strategy 'magic': choose auto or one of linear-probe"):
        compare(tiny_dataset, strategies=["linear-probe", "magic"], out=tmp_path, log=None)
    with pytest.raises(GraftError, match="empty"):
        compare(tiny_dataset, strategies=[], out=tmp_path, log=None)
    with pytest.raises(GraftError, match="--epochs 0"):
        compare(tiny_dataset, epochs=0, out=tmp_path, log=None)
    assert not any(tmp_path.iterdir())  # nothing was started


@pytest.mark.slow
def test_cli_prints_the_table(tiny_dataset, tmp_path):
    result = CliRunner().invoke(app, ["compare", str(tiny_dataset), "--strategies", "linear-probe,scratch", "--epochs", "1",
                                      "--img-size", "32", "--views", "1", "--workers", "0", "--out", str(tmp_path),
                                      "--name", "cli"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "linear-probe" in result.output and "scratch" in result.output and "compare.md" in result.output
    assert (tmp_path / "cli" / "accuracy.png").exists()


def test_one_epoch_is_one_column(comparison):
    """With --epochs 1, 'after epoch 1' and 'after the last epoch' are the same: compare.md says it once."""
    import dataclasses

    markdown = dataclasses.replace(comparison, epochs=1).to_markdown()
    header = next(line for line in markdown.splitlines() if line.startswith("| strategy"))
    assert header.count("val acc @") == 1 and "epochs |" not in header
    row = next(line for line in markdown.splitlines() if line.startswith("| linear-probe"))
    assert row.count("|") == header.count("|")
