"""The benchmark suite's harness (`python -m benchmarks`, benchmarks/__main__.py): a figure is recorded
with the machine, versions, commit, date, command and parameters beside it, other keys of the
results file are kept, and rounds are interleaved with their baseline. The benchmarks' own figures
are not checked here (speed belongs in the benchmarks, not in timed tests)."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a package at the repository's root, not installed
    sys.path.insert(0, str(ROOT))


def _suite(*arguments: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks", *arguments], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "GRAFT_CACHE": str(tmp_path / "cache")})


@pytest.mark.slow
def test_quick_run_records_each_figure_beside_its_machine_and_commit_and_keeps_other_keys(tmp_path, tiny_dataset):
    data = tmp_path / "data"  # the suite reads train/ and test/
    shutil.copytree(tiny_dataset / "train", data / "train")
    shutil.copytree(tiny_dataset / "val", data / "test")
    results = tmp_path / "results.json"
    older = {"figures": {"ratio": 0.9}, "machine": {"cpu": "elsewhere"}, "commit": "0000000", "measured_before_the_suite": True}
    results.write_text(json.dumps({"older": older}))

    run = _suite("--quick", "--only", "memory", "--data", str(data), "--results", str(results),
                 "--set", "memory.images=12", "--set", "memory.small_images=4", "--set", "memory.engine=torch",
                 tmp_path=tmp_path)

    assert run.returncode == 0, run.stdout + run.stderr
    saved = json.loads(results.read_text())
    assert saved["older"] == older
    entry = saved["memory"]
    figures = entry["figures"]
    assert (figures["many"]["images"], figures["few"]["images"]) == (12, 4)
    assert figures["many"]["engine"] == "torch"
    assert 200 < figures["many"]["peak_rss_mb"] < 20_000  # a process holding torch and a model, measured
    machine = entry["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["ram_gb"] > 0
    assert set(machine["flags"]) == {"avx2", "avx512f", "avx512_bf16", "amx"}
    assert entry["versions"]["torch"] == version("torch") and entry["versions"]["graft"] == version("graft")
    head, _, dirty = entry["commit"].partition(" ")
    assert re.fullmatch(r"[0-9a-f]{7,40}", head) and dirty in ("", "dirty")
    assert subprocess.run(["git", "cat-file", "-e", f"{head}^{{commit}}"], cwd=ROOT).returncode == 0
    assert entry["date"] == datetime.date.today().isoformat()
    assert entry["command"].startswith("python -m benchmarks --quick --only memory")
    assert entry["parameters"] == {"data": str(data), "quick": True, "images": 12, "small_images": 4, "img_size": 32,
                                   "engine": "torch"}


def test_an_unknown_benchmark_or_parameter_is_refused_naming_it(tmp_path):
    run = _suite("--only", "speed", tmp_path=tmp_path)
    assert run.returncode == 2 and "speed" in run.stderr and "frozen_training" in run.stderr
    run = _suite("--quick", "--only", "memory", "--set", "memory.imgs=3", "--results", str(tmp_path / "r.json"),
                 tmp_path=tmp_path)
    assert run.returncode == 1 and "memory.imgs" in run.stderr and "small_images" in run.stderr
    assert not (tmp_path / "r.json").exists()


def test_every_benchmark_declares_full_and_quick_parameters():
    from benchmarks.__main__ import SUITE, load

    for name in SUITE:
        module = load(name)
        assert callable(module.run), name
        assert module.__doc__ and module.__doc__.strip().splitlines()[0].endswith("."), name
        for parameter, declared in module.PARAMETERS.items():
            assert type(declared.quick) is type(declared.full), (name, parameter)


def test_interleaved_rounds_alternate_the_baseline_and_report_the_median_ratio():
    from benchmarks._runs import interleaved

    calls = []
    measured = iter([5.0, 6.0, 4.0])

    def baseline():
        calls.append("baseline")
        return 10.0, {"side": "baseline"}

    def thing():
        calls.append("measured")
        return next(measured)

    pair = interleaved(3, {"x": (baseline, thing)})["x"]
    assert calls == ["baseline", "measured", "measured", "baseline", "baseline", "measured"]
    assert pair.ratios == [0.5, 0.6, 0.4] and pair.ratio == 0.5
    assert pair.baseline_extras == [{"side": "baseline"}] * 3

    calls.clear()
    rates = iter([8.0, 12.0, 9.0, 11.0])
    bracketed = interleaved(1, {"y": (lambda: calls.append("baseline") or next(rates),
                                      lambda: calls.append("measured") or 5.0)}, bracket=True)["y"]
    assert calls == ["baseline", "measured", "baseline"]
    assert bracketed.baseline == [10.0] and bracketed.ratio == 0.5  # the mean of the rates before and after
