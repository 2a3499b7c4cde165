"""A second identical run does again only what it must: the run's export is shared by identical
models (keyed by what decides it, not by the run folder), and the report's figures come from
graft's cache where they would be drawn from the same inputs, the same bytes as drawn; anything that
changes a figure's inputs draws it again (issue 24, section 5)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import graft
from conftest import FAST
from graft.export.cached import export_path, weights_digest


@pytest.fixture
def onnxruntime_cpu(monkeypatch):
    """A CPU where `--engine auto` predicts in ONNX Runtime (so a run leaves its export): no GPU."""
    monkeypatch.setattr("graft.engines.choice.GPU_DEVICE_FILES", ())


def test_a_second_identical_run_reuses_the_export_of_the_first(tiny_dataset, fresh_cache, tmp_path, onnxruntime_cpu,
                                                               monkeypatch):
    monkeypatch.setenv("GRAFT_CACHE", str(fresh_cache))  # where export_path looks, as --cache-dir makes the run look

    def train(name: str, **options):
        return graft.train(tiny_dataset, strategy="linear-probe", out=tmp_path / "runs", name=name,
                           cache_dir=fresh_cache, **{**FAST, **options})

    first = train("cached-run-1")
    kept = export_path(first.run_dir)
    assert kept.is_relative_to(fresh_cache) and kept.exists() and "export_s" in first.metrics.timings
    written = kept.stat()

    second = train("cached-run-2")
    assert export_path(second.run_dir) == kept  # another run folder, the same model
    assert "export_s" not in second.metrics.timings  # nothing exported
    assert (kept.stat().st_ino, kept.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    assert sorted(p.name for p in kept.parent.glob("*.onnx")) == [kept.name]

    other = train("other-c", logreg_c=1.0)  # another head: its own export
    assert export_path(other.run_dir) != kept and export_path(other.run_dir).exists()


def test_the_weights_digest_is_the_tensors_not_the_files_metadata_order(tmp_path):
    """safetensors writes its free-form metadata in no fixed order, so two saves of the same tensors
    can differ in their bytes: the export's key reads the tensors alone."""
    from safetensors.numpy import save_file

    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, dtype=np.int64)}
    paths = []
    for index, metadata in enumerate(({"format": "graft", "version": "2"}, {"version": "2", "format": "graft"}, None)):
        paths.append(tmp_path / f"{index}.safetensors")
        save_file(tensors, str(paths[-1]), metadata=metadata)
    assert len({weights_digest(path) for path in paths}) == 1
    save_file({**tensors, "a": tensors["a"] + 1}, str(tmp_path / "changed.safetensors"))
    save_file({**tensors, "a": tensors["a"].reshape(3, 2)}, str(tmp_path / "reshaped.safetensors"))
    assert weights_digest(tmp_path / "changed.safetensors") != weights_digest(paths[0])
    assert weights_digest(tmp_path / "reshaped.safetensors") != weights_digest(paths[0])
    (tmp_path / "junk.safetensors").write_bytes(b"\x03")  # not a safetensors file: its bytes' hash
    assert len(weights_digest(tmp_path / "junk.safetensors")) == 64


def _figures(run_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((run_dir / "report").glob("*.png"))}


@pytest.mark.slow
def test_the_report_of_an_unchanged_run_is_not_drawn_again_and_is_when_something_changed(
        tiny_dataset, fresh_cache, tmp_path, monkeypatch):
    """The second run's figures come from the cache, byte for byte those the first drew, and its
    activation maps and channel rankings are not computed; a changed image among the mistakes draws
    the mistakes figure again, and another model every figure it changes."""
    import graft.explain.channels
    import graft.plotting
    from conftest import COLOURS, make_image

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    planted = make_image(data / "val" / "blue" / "planted.png", color=COLOURS["red"], seed=999)  # a sure mistake
    drawn: list[str] = []
    png_bytes, run_top_channels = graft.plotting.png_bytes, graft.explain.channels.run_top_channels
    monkeypatch.setattr(graft.plotting, "png_bytes", lambda figure: drawn.append("png") or png_bytes(figure))
    monkeypatch.setattr(graft.explain.channels, "run_top_channels",
                        lambda *a, **k: drawn.append("channels") or run_top_channels(*a, **k))

    def train(name: str, **options):
        drawn.clear()
        return graft.train(data, strategy="linear-probe", out=tmp_path / "runs", name=name, cache_dir=fresh_cache,
                           **{**FAST, "report": True, "audit": True, **options})

    def report(run) -> list[str]:
        """report.md's lines but the timings, with the run's name as RUN."""
        text = (run.run_dir / "report.md").read_text().replace(run.run_dir.name, "RUN")
        return [line for line in text.splitlines() if "time (s)" not in line]

    first = train("cached-run-1")
    figures = _figures(first.run_dir)
    assert {"confusion-val.png", "mistakes.png", "channels-stage-3.png", "channels-stage-4.png"} <= set(figures)
    assert drawn.count("png") == len(figures) and drawn.count("channels") == 2
    assert "val/blue/planted.png" in "\n".join(report(first))
    assert len(list((fresh_cache / "report").glob("*.json"))) == len(figures)  # kept under --cache-dir

    second = train("cached-run-2")
    assert drawn == []  # no figure rendered, no activation map or channel ranking computed
    assert _figures(second.run_dir) == figures and report(second) == report(first)

    planted.touch()  # the same pixels, another file time: the mistakes figure's input changed
    third = train("cached-run-3")
    assert drawn == ["png"]  # the mistakes figure alone
    assert _figures(third.run_dir) == figures and report(third) == report(first)

    fourth = train("cached-run-4", logreg_c=1.0)  # another head: other maps, and the channels of another model
    assert drawn.count("channels") == 2 and drawn.count("png") >= 3
    assert _figures(fourth.run_dir)["mistakes.png"] != figures["mistakes.png"]


def test_a_kept_figure_is_read_back_checked_and_drawn_again_when_damaged(fresh_cache, monkeypatch):
    from matplotlib.figure import Figure

    from graft.report import cache

    monkeypatch.setenv("GRAFT_CACHE", str(fresh_cache))
    draws: list[int] = []

    def draw(value: int):
        def make():
            draws.append(value)
            figure = Figure(figsize=(2, 2))
            figure.subplots().plot([0, value])
            return figure, {"value": value}
        return make

    png, extras = cache.figure_png("test", {"value": 1}, draw(1))
    assert png.startswith(b"\x89PNG") and extras == {"value": 1} and draws == [1]
    assert cache.figure_png("test", {"value": 1}, draw(1)) == (png, extras) and draws == [1]  # kept
    assert cache.figure_png("test", {"value": 2}, draw(2))[0] != png and draws == [1, 2]  # other parts
    assert cache.figure_png("test", None, draw(1)) == (png, extras) and draws == [1, 2, 1]  # None: never kept

    path = cache.entry_path("test", {"value": 1})
    assert path.is_relative_to(fresh_cache / "report")
    entry = json.loads(path.read_text())
    entry["png"] = entry["png"][:-8] + "AAAAAAA="  # damaged: the checksum no longer matches
    path.write_text(json.dumps(entry))
    assert cache.figure_png("test", {"value": 1}, draw(1)) == (png, extras) and draws == [1, 2, 1, 1]
    path.write_text("{not json")
    assert cache.figure_png("test", {"value": 1}, draw(1)) == (png, extras) and draws == [1, 2, 1, 1, 1]
