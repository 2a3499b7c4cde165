"""The command line as a newcomer first meets it (issue 24): `graft --version`, help that reads at 80
columns, usage lines in one notation, the commands in the README's order, defaults that match their
help, and graft compare's table whole at any width. Every test holds at any terminal width."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import set_terminal_width
from graft.cli.help import ORDER
from graft.cli.main import app

runner = CliRunner()


def _help(*args: str, columns: int = 80) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": str(columns)}, catch_exceptions=False,
                           prog_name="graft")
    assert result.exit_code == 0, result.output
    return result.output


def test_graft_version():
    result = runner.invoke(app, ["--version"], catch_exceptions=False, prog_name="graft")
    assert result.exit_code == 0 and result.output.strip() == f"graft {version('graft')}"


@pytest.mark.parametrize("columns", [80, 200])
def test_train_help_reads_at_80_columns(columns):
    """At 80 columns Rich's five option columns left about 22 for the help (--train-bn-stats/--no-train-bn-stats)."""
    text = _help("train", columns=columns)
    assert max(len(line) for line in text.splitlines()) <= 80
    # the help text keeps most of the width: these words stand on one line, beside or under the flag
    assert "Fine-tuning: update the pretrained BatchNorm" in text
    assert "Go on with an interrupted run, in its" in text
    assert "<bool>" not in text  # flags take no value: no type shown


def _commands(text: str) -> list[str]:
    listing = text[text.index("Commands:"):].splitlines()[1:]
    return [line.split()[0] for line in listing if line.startswith("  ") and not line.startswith("   ")]


def test_commands_are_listed_in_the_readme_order_and_every_usage_line_in_one_notation():
    names = _commands(_help())
    assert names[:4] == ["train", "advise", "predict", "evaluate"] and names == [n for n in ORDER if n in names]
    usages = {name: _help(name).splitlines()[0] for name in names if name != "cache"}
    usages["cache rm"] = _help("cache", "rm").splitlines()[0]
    for usage in usages.values():
        assert "{" not in usage and not re.search(r"\[[a-z]", usage), usage  # Typer wrote {data} and [data]
    assert usages["train"] == "Usage: graft train [OPTIONS] [DATA]"
    assert usages["evaluate"] == "Usage: graft evaluate [OPTIONS] MODEL DATA"
    assert usages["predict"] == "Usage: graft predict [OPTIONS] TARGET..."
    assert usages["cache rm"] == "Usage: graft cache rm [OPTIONS] [KEYS...]"


def test_demo_help_names_the_default_it_has():
    """`graft demo --help` said auto is the default, then showed [default: linear-probe]."""
    text = re.sub(r"-\s+", "-", " ".join(_help("demo").split()))  # as one line: where the help wraps does not matter
    assert "[default: linear-probe]" in text and "auto (the default" not in text


def test_a_missing_argument_is_named_as_the_help_names_it(capsys, monkeypatch):
    from test_cli import run_main

    code, output = run_main(["evaluate"], capsys, monkeypatch)
    assert code == 2 and "Missing argument 'MODEL'" in output


# -- graft compare's table ------------------------------------------------------------------------------


def _comparison(epochs: int):
    from graft.compare.comparison import Comparison, StrategyRow

    rows = [StrategyRow(strategy=name, run_dir="", val_acc_first=0.5 + i / 10, val_acc_last=0.55 + i / 10,
                        best_val_acc=0.6 + i / 10, test_acc=None if i == 0 else 0.58 + i / 10,
                        epoch_time_s=None if name == "linear-probe" else 12.5 * (i + 1), features_s=3.0,
                        total_s=40.0 * (i + 1), trainable_params=3_374_851 if i > 1 else 3_843, peak_rss_mb=1234.0)
            for i, name in enumerate(["linear-probe", "feature-extract", "finetune", "scratch"])]
    return Comparison(data="photos", backbone="tf_efficientnet_lite0", epochs=epochs, seed=0, rows=rows,
                      folder=Path("compare"))


@pytest.mark.parametrize("columns", [200, 80, 40])
def test_the_comparison_is_whole_at_any_width(columns, capsys, monkeypatch):
    """At 80 columns every header and row was cut (`strat…`, `linea…`)."""
    from graft.cli.compare import comparison_columns, comparison_table
    from graft.cli.render import console

    set_terminal_width(monkeypatch, columns)
    comparison = _comparison(epochs=3)
    console.print(comparison_table(comparison))
    output = capsys.readouterr().out
    assert "…" not in output and max(len(line) for line in output.splitlines()) <= columns
    for header, values in comparison_columns(comparison):
        assert header in output and all(value in output for value in values)
    for row in comparison.rows:
        assert row.strategy in output


def test_one_epoch_shows_the_first_epoch_once(capsys, monkeypatch):
    """With --epochs 1 the table showed "val @1" twice."""
    from graft.cli.compare import comparison_table
    from graft.cli.render import console

    set_terminal_width(monkeypatch, 200)
    console.print(comparison_table(_comparison(epochs=1)))
    output = capsys.readouterr().out
    assert output.count("val @1") == 1 and "1 epoch each" in output
