"""One config for every option, strategies that own their phases, and a typed run record.

The acceptance of the architecture: adding an option is one field (the CLI, the Python API and the
record follow), and adding a strategy is one registered class (train, compare, advise, the CLI and
the report pick it up with no other edit).
"""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

import graft
from conftest import FAST
from graft.cli.main import app
from graft.compare import compare
from graft.config import GROUPS, TrainConfig, flag_of, option_fields, option_groups
from graft.errors import GraftError
from graft.record import RunMetrics, RunRecord
from graft.strategies import STRATEGIES, Strategy, get_strategy, register, unregister
from test_cli import run_main


def test_every_option_has_one_flag_help_and_group():
    names = [spec.name for _group, spec, _kind in option_fields()]
    assert len(names) == len(set(names)) == len(option_groups())
    for _group, spec, _kind in option_fields():
        assert spec.metadata["help"], spec.name
        assert flag_of(spec) == "--" + spec.name.replace("_", "-") or spec.metadata.get("flag")


def test_the_cli_is_generated_from_the_config():
    """Every option is a flag of `graft train`, with the config's default."""
    help_text = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "250"}).output
    for _group, spec, _kind in option_fields():
        assert flag_of(spec) in help_text, spec.name


@pytest.mark.parametrize("options, message", [
    (dict(lr=math.nan), "--lr nan: must be a finite number"),
    (dict(lr=math.inf), "--lr inf: must be a finite number"),
    (dict(epochs=0), "--epochs 0"),
    (dict(seed=-1), "--seed -1"),
    (dict(devices="abc"), "--devices 'abc'"),
    (dict(num_nodes=0), "--num-nodes 0"),
    (dict(val_split=1.0), "--val-split 1.0"),
    (dict(hflip=2.0), "--hflip 2.0"),
    (dict(epochs=2.5), "--epochs 2.5: must be a whole number"),
    (dict(epoch=3), "Unknown option 'epoch'. Did you mean 'epochs'?"),
    # issue 24: a 30 GB allocation's traceback, and run folders written outside --out
    (dict(img_size=100000), "--img-size 100000: the input side in pixels, from 16 to 2048"),
    (dict(name="../escape"), "--name '../escape': a folder name inside --out, without / or \\\\"),
    (dict(name="a/b"), "--name 'a/b': a folder name inside --out"),
    (dict(name=".."), "--name '..': a folder name inside --out"),
])
def test_bad_values_are_refused_with_the_flag_named(options, message):
    with pytest.raises(GraftError, match=message.replace("(", r"\(").replace("?", r"\?").replace(".", r"\.")):
        TrainConfig.from_options(**options)


def test_config_round_trips_and_replace_routes_flat_names():
    config = TrainConfig.from_options(strategy="partial", unfreeze=1, lr=3e-4, augment=False, devices=2)
    assert config.strategy.unfreeze == 1 and config.optim.lr == 3e-4 and config.runtime.devices == 2
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert set(config.to_dict()) == set(GROUPS)
    changed = config.replace(epochs=7)
    assert changed.optim.epochs == 7 and config.optim.epochs == 5  # frozen: replace makes a copy
    with pytest.raises(GraftError, match="not an option of graft optim"):
        TrainConfig.from_dict({"optim": {"strategy": "finetune"}})


def test_command_line_is_one_unwrapped_line_that_parses_back():
    config = TrainConfig.from_options(strategy="truncate", cut=3, augment=False, img_size=64)
    line = config.command("my photos")
    assert line == "graft train 'my photos' --strategy truncate --cut 3 --img-size 64 --no-augment"


def test_train_accepts_every_cli_name(tiny_dataset, tmp_path):
    """The README promises graft.train takes the CLI's names: crop_scale, hflip, color_jitter too."""
    run = graft.train(tiny_dataset, strategy="feature-extract", crop_scale=0.5, hflip=0.0, color_jitter=0.1,
                      out=tmp_path, **FAST)
    assert run.record.config.augment.crop_scale == 0.5 and run.record.config.augment.color_jitter == 0.1


def test_compare_takes_a_comma_separated_string(tiny_dataset, tmp_path):
    comparison = compare(tiny_dataset, strategies="linear-probe, feature-extract", epochs=1,
                                       out=tmp_path, **{k: v for k, v in FAST.items() if k != "epochs"})
    assert [row.strategy for row in comparison.rows] == ["linear-probe", "feature-extract"]


# The strategy contract, over the whole registry -----------------------------------------------------------

@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_contract(name):
    plan = get_strategy(name)
    assert plan.name == name and plan.summary and plan.case
    assert plan.head_phase in ("logreg", "sgd", None)
    assert plan.head_phase is not None or plan.image_phase, "something must train"
    assert plan.main_phase in ("head", "images", None)
    assert set(plan.cases) <= {1, 2, 3, 4}
    config = TrainConfig().replace(strategy=name)
    plan.check(config)
    views = plan.head_views(config.augment)
    assert views == [None] or views == list(range(config.augment.views))
    assert 0 < plan.backbone_lr_ratio(config.optim) <= 1


def test_register_refuses_duplicates_and_auto():
    with pytest.raises(TypeError, match="already registered"):
        register(type("Again", (Strategy,), {"name": "finetune", "summary": "x", "case": "y"}))
    with pytest.raises(TypeError, match="other than 'auto'"):
        register(type("Auto", (Strategy,), {"name": "auto", "summary": "x", "case": "y"}))


@pytest.fixture
def throwaway():
    """A strategy nobody wrote any other code for: train only the last stage, head phase by SGD."""

    class LastStage(Strategy):
        name = "last-stage-only"
        summary = "Throwaway: head first, then only the last stage of the base."
        case = "large data, similar to ImageNet"
        cases = (3,)
        image_phase = True

        def trainable(self, backbone, options):
            return backbone.last_stages(1)

    register(LastStage)
    yield LastStage
    unregister(LastStage.name)


@pytest.mark.slow
def test_a_new_strategy_is_one_class(throwaway, tiny_dataset, tmp_path, capsys, monkeypatch):
    from graft.advise import StageEvidence, recommend

    name = throwaway.name
    # The CLI lists it (and `graft train --strategy` accepts it: the end of this test).
    assert name in CliRunner().invoke(app, ["strategies"], env={"COLUMNS": "250"}).output
    # compare runs it, with its main phase on images and a head at epoch 0.
    comparison = compare(tiny_dataset, strategies=[name], epochs=1, out=tmp_path / "c",
                                       **{k: v for k, v in FAST.items() if k != "epochs"})
    (row,) = comparison.rows
    assert row.strategy == name and row.curve[0][0] == 0 and row.epoch_time_s is not None
    # The trained parameters are the head's plus the last stage's, as the class said.
    run = graft.train(tiny_dataset, strategy=name, out=tmp_path / "t", **{**FAST, "report": True})
    assert run.metrics.params.trained < run.metrics.params.total
    assert {row.phase for row in run.history} == {"head", "images"}
    # The report names it and says what trained.
    assert name in (run.run_dir / "report.md").read_text() and throwaway.summary in (run.run_dir / "report.md").read_text()
    # advise offers it where its case applies.
    stages = [StageEvidence(index=i, channels=8, bn_drift=0.1, probe_accuracy=0.5 + i / 10) for i in range(3)]
    advice = recommend(3, stages=stages, best=2, reasons=[], images_per_class=500, train_images=1500)
    assert any(text.startswith(name) for text in advice.alternatives)
    # And the CLI trains it.
    code, output = run_main(["train", str(tiny_dataset), "--strategy", name, "--out", str(tmp_path / "cli"),
                             "--img-size", "32", "--epochs", "1", "--head-epochs", "1", "--views", "1", "--workers", "0",
                             "--no-report", "--no-audit"], capsys, monkeypatch)
    assert code in (0, None), output


# The run record ---------------------------------------------------------------------------------------------

def test_run_record_round_trips_and_replays(tiny_dataset, tmp_path, capsys, monkeypatch):
    run = graft.train(tiny_dataset, strategy="linear-probe", out=tmp_path, name="first",
                      **FAST)
    saved = json.loads((run.run_dir / "graft.json").read_text())
    assert RunRecord.from_dict(saved) == run.record
    metrics = RunMetrics.from_dict(json.loads((run.run_dir / "metrics.json").read_text()))
    assert metrics.val_accuracy == run.metrics.val_accuracy and metrics.evaluations["val"] == run.metrics.val
    assert graft.load(run.run_dir).record == run.record
    # `graft train --config` replays it: same data, same options, same answer; flags given override.
    code, output = run_main(["train", "--config", str(run.run_dir / "graft.json"), "--name", "replay", "--out", str(tmp_path)],
                            capsys, monkeypatch)
    assert code in (0, None), output
    replay = RunRecord.from_dict(json.loads((tmp_path / "replay" / "graft.json").read_text()))
    assert replay.config.replace(name="first") == run.record.config.replace(name="first")
    assert replay.accuracy == run.record.accuracy


def test_metrics_json_is_strict_json(tmp_path):
    """A diverging epoch's losses are NaN: metrics.json held a bare NaN, which strict JSON readers refuse."""
    from graft.io import write_json_atomic
    from graft.record import EpochRow, ParamCounts, RunMetrics

    row = EpochRow(phase="head", epoch=1, train_loss=math.nan, train_acc=0.5, val_loss=math.inf, val_acc=0.5, lr=1e-3,
                   epoch_time_s=0.1)
    write_json_atomic(tmp_path / "metrics.json", RunMetrics(evaluations={}, history=[row], timings={"total_s": 1.0},
                                                                 params=ParamCounts(total=3, trainable=3, frozen=0, trained=3)).to_dict())
    text = (tmp_path / "metrics.json").read_text()
    saved = json.loads(text, parse_constant=lambda constant: pytest.fail(f"bare {constant} in metrics.json"))
    assert saved["history"][0]["train_loss"] is None and saved["history"][0]["val_loss"] is None


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.pop("backbone"), "missing backbone"),
    (lambda r: r.update(classes=[]), "classes must be a list of at least 2"),
    (lambda r: r.update(classes="abc"), "classes must be a list"),
    (lambda r: r.update(format_version=99), "format version 99"),
    (lambda r: r["config"]["optim"].update(lr="fast"), "--lr 'fast': must be a number"),
])
def test_an_edited_record_gets_a_clear_message(linear_probe_run, edit, message):
    record = json.loads((linear_probe_run.run_dir / "graft.json").read_text())
    edit(record)
    with pytest.raises(GraftError, match=message):
        RunRecord.from_dict(record)


def test_an_unknown_strategy_is_refused_before_any_data_is_read(tmp_path):
    """Strategies register themselves (graft.strategies imports graft.config, never the reverse), so the
    name is checked where a run starts: before the data, which does not even exist here, is looked at."""
    with pytest.raises(GraftError, match=r"--strategy 'magic': choose auto or one of linear-probe, .*graft strategies"):
        graft.train(tmp_path / "no-such-data", strategy="magic", out=tmp_path, log=None)
