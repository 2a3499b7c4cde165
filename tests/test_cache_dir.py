"""One cache root: with --cache-dir X (or graft.runtime.use_cache_dir(X)), every file graft caches
(features, traced graphs, run exports, the readability memo) goes under X, in this process and in
the processes it starts, and nothing under $GRAFT_CACHE or the home folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from conftest import FAST
from graft.cli.main import app
from graft.runtime import cache_root, use_cache_dir

CHILD = [sys.executable, "-c", "from graft.runtime import cache_root; print(cache_root())"]

# ONNX Runtime 1.29 and later writes a telemetry device id and event store under ~/.cache when it is
# imported, unless ORT_DISABLE_TELEMETRY is set, as graft sets it (graft/__init__.py): the tests below
# allow nothing under the home folder.
NOT_GRAFTS: tuple[str, ...] = ()


def test_use_cache_dir_answers_in_this_process_and_its_children(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAFT_CACHE", str(tmp_path / "before"))
    monkeypatch.chdir(tmp_path)
    with use_cache_dir("x"):  # made absolute: a child started in another folder agrees
        assert cache_root() == tmp_path / "x"
        child = subprocess.run(CHILD, cwd="/", capture_output=True, text=True, check=True)
        assert child.stdout.strip() == str(tmp_path / "x")
        with use_cache_dir(None):  # None changes nothing
            assert cache_root() == tmp_path / "x"
        with use_cache_dir(tmp_path / "inner"):
            assert cache_root() == tmp_path / "inner"
        assert cache_root() == tmp_path / "x"
    assert cache_root() == tmp_path / "before"
    monkeypatch.delenv("GRAFT_CACHE")
    with pytest.raises(KeyboardInterrupt), use_cache_dir(tmp_path / "x"):
        raise KeyboardInterrupt
    assert "GRAFT_CACHE" not in os.environ  # put back as it was: absent


COMMANDS_THAT_CACHE = ["train", "demo", "predict", "evaluate", "export", "serve", "explain", "audit", "advise",
                       "compare", "cache ls", "cache rm", "cache verify"]


@pytest.mark.parametrize("name", COMMANDS_THAT_CACHE)
def test_every_command_that_caches_takes_cache_dir(name):
    command = typer.main.get_command(app)
    for word in name.split():
        command = command.commands[word]  # type: ignore[attr-defined]
    assert any("--cache-dir" in parameter.opts for parameter in command.params)


def _written(folder: Path) -> list[str]:
    """The files under `folder`, relative to it, but those other libraries write there by themselves."""
    if not folder.exists():
        return []
    files = [path.relative_to(folder).as_posix() for path in folder.rglob("*") if not path.is_dir()]
    return sorted(name for name in files if not name.startswith(NOT_GRAFTS))


@pytest.fixture()
def elsewhere(tmp_path, monkeypatch):
    """An empty home folder and an empty $GRAFT_CACHE, neither of which graft may write to."""
    home, graft_cache = tmp_path / "home", tmp_path / "graft-cache"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("GRAFT_CACHE", str(graft_cache))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "matplotlib"))  # matplotlib's own font list
    return {"HOME": home, "GRAFT_CACHE": graft_cache}


def _cached_in(folder: Path) -> None:
    """`folder` holds features, backbone graphs, a run export and the readability memo."""
    from graft.features import FeatureCache

    assert FeatureCache(folder / "features").entries(), "no features"
    assert list((folder / "engines").glob("*.onnx")), "no backbone graph"
    assert list((folder / "engines" / "runs").glob("*.onnx")), "no run export"
    assert list((folder / "checked").iterdir()), "no readability memo"


@pytest.mark.slow  # trains a model (with a traced graph), then runs seven commands
def test_every_command_caches_in_cache_dir_only(tiny_dataset, tmp_path, elsewhere):
    x, out = tmp_path / "X", tmp_path / "out"
    image = next((tiny_dataset / "val" / "red").iterdir())
    run = out / "lp"
    commands = {
        # --engine onnxruntime: features extracted in ONNX Runtime, from a graph traced into the cache, on any machine
        "train": ["train", tiny_dataset, "--strategy", "linear-probe", "--img-size", "32", "--batch-size", "16",
                  "--head-epochs", "2", "--views", "1", "--workers", "0", "--no-report", "--no-audit",
                  "--engine", "onnxruntime", "--out", out, "--name", "lp"],
        "predict": ["predict", run, image, "--engine", "onnxruntime"],  # from the run's export, kept in the cache
        "evaluate": ["evaluate", run, tiny_dataset / "val", "--output", tmp_path / "evaluation.json"],
        "export": ["export", run, "--out", tmp_path / "model.onnx"],
        "explain": ["explain", run, image, "--out", tmp_path / "explain"],
        "audit": ["audit", tiny_dataset, "--img-size", "32", "--workers", "0"],
        "advise": ["advise", tiny_dataset, "--img-size", "32", "--workers", "0"],
        "cache ls": ["cache", "ls"],
    }
    runner, strays = CliRunner(), {}
    for name, args in commands.items():
        result = runner.invoke(app, [str(arg) for arg in [*args, "--cache-dir", x]], catch_exceptions=False)
        assert result.exit_code == 0, f"graft {name}: {result.output}"
        for where, folder in elsewhere.items():
            for file in _written(folder):
                strays.setdefault(f"{where}/{file}", name)  # the command that wrote it first
    assert strays == {}, "written outside --cache-dir"
    from graft.features import FeatureCache

    assert f"{len(FeatureCache(x / 'features').entries())} entries" in result.output  # cache ls: X's features
    _cached_in(x)


@pytest.mark.slow
def test_train_with_cache_dir_caches_there_only(tiny_dataset, tmp_path, elsewhere):
    import graft

    x = tmp_path / "X"
    graft.train(tiny_dataset, strategy="linear-probe", engine="onnxruntime", out=tmp_path / "out", name="lp",
                cache_dir=str(x), **FAST)
    assert {where: _written(folder) for where, folder in elsewhere.items()} == {"HOME": [], "GRAFT_CACHE": []}
    _cached_in(x)


def test_onnx_runtime_writes_nothing_in_the_home_folder_under_graft(tmp_path):
    """ONNX Runtime 1.29 and later keeps a telemetry device id under ~/.cache when imported, unless told
    not to: graft tells it (graft/__init__.py), so a fresh process that imports both writes nothing there."""
    env = {name: value for name, value in os.environ.items() if name not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    code = "import graft, onnxruntime; onnxruntime.InferenceSession  # noqa"
    subprocess.run([sys.executable, "-c", code], env={**env, "HOME": str(tmp_path)}, check=True)
    assert _written(tmp_path) == []
