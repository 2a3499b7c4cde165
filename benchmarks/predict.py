"""`graft predict --csv` (from the run folder, and from its ONNX export) against the bare forward pass, and memory.

    python benchmarks/predict.py --data ../shared/datasets/cifar10-dev [--images 10000] [--rounds 3]
        [--engine auto|torch|onnxruntime|openvino] [--img-size 224]

1. A linear-probe run on 20 images per class of DATA/train (img size: --img-size, default the
   backbone's own, 224 px), so the model is a real Lite0 classifier.
2. The image list: every image under DATA, repeated (as symlinks in a temporary folder) up to
   `--images` files, so the command reads that many files.
3. The first `graft predict RUN FOLDER --csv OUT --engine ENGINE`, as a user types it after
   training, reported on its own: where ONNX Runtime is the engine, it predicts from the export the
   training left (the backbone's graph plus the head: graft.export.cached), or, where there is none,
   exports the run first in a child process.
4. In interleaved rounds: (a) the bare forward rate of what `graft predict RUN` runs: the run's kept
   export in ONNX Runtime (or, where the engine is not ONNX Runtime, the model in graft.engines at
   graft's precision) on random uint8 batches of 64 already in memory, the mean of 10 s just before
   (b) and 10 s just after it; (b) `graft predict RUN` again, timed from the start of the process to
   its end; (c) the bare rate of the run's `graft export` (done once before the rounds) in ONNX
   Runtime, the same way around (d); (d) `graft predict model.onnx FOLDER --csv OUT`, which runs
   without torch, timed like (b).
Memory: the largest RSS of the command's process and every child process it starts (the exporting
child; loader workers where there are any) together, read every 0.1 s while they run, and never
less than the peak RSS (VmHWM) any one of them reached.
Prints images/s of each, the ratios (b)/(a) and (d)/(c) (target >= 0.85), the peak RSS (target <= 1 GB),
how many top-1 answers (d) gives differently from (b), and how many of the first 1,000 differ from
`graft.load(RUN).predict` (torchvision's resizing against the export's Pillow); writes them under
"predict" (or "predict_IMAGES" for another --images; with "_DATA" after it for data other than
cifar10-dev) in benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import store
from _runs import train_small_probe

EXTENSIONS = {".jpg", ".jpeg", ".png"}


def bare_rate(run_dir: Path, *, engine: str, images: int, seconds: float = 20.0, batch: int = 64) -> tuple[float, str]:
    """Images/s of what `graft predict RUN` runs for `images` images, alone, and its engine."""
    import torch

    import graft
    from graft.engines import frozen_forward
    from graft.export.cached import export_path
    from graft.runtime import Runtime

    kept = export_path(run_dir)
    if kept.exists():  # `graft predict RUN` predicted from the run's export (graft.export.cached)
        return exported_bare_rate(kept, seconds=seconds, batch=batch), "onnxruntime (the run's kept export)"
    classifier = graft.load(run_dir)
    runtime = Runtime.resolve(precision=classifier.precision, engine=engine, progress=False)
    size = classifier.data_config.input_size
    pixels = torch.randint(0, 256, (batch, *size), dtype=torch.uint8)
    with frozen_forward(classifier.model, runtime=runtime, images=images, input_size=size) as forward:
        forward(pixels)  # warm-up
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            forward(pixels).softmax(dim=-1)
            done += batch
        return done / (time.perf_counter() - started), forward.engine


def exported_bare_rate(model: Path, *, seconds: float = 20.0, batch: int = 64) -> float:
    """Images/s of an exported model alone in ONNX Runtime, as `graft predict model.onnx` runs it."""
    import numpy as np

    from graft.export.exported import ExportedModel

    exported = ExportedModel(model)
    pixels = np.random.default_rng(0).integers(0, 256, (batch, *exported.input_size), dtype=np.uint8)
    exported.probabilities(pixels)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        exported.probabilities(pixels)
        done += batch
    return done / (time.perf_counter() - started)


def _vm_kb(pid: int, field: str) -> int:
    """VmHWM (the peak) or VmRSS (now) of a process, in kB; 0 once it has ended."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field))
    except (OSError, StopIteration):
        return 0


def _descendants(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            children = [int(child) for child in handle.read().split()]
    except OSError:
        return []
    return children + [grandchild for child in children for grandchild in _descendants(child)]


def timed_predict(command: list[str], out: Path, env: dict) -> tuple[float, float, dict[str, str]]:
    """(images/s from the process's start to its end, its peak memory in MB, path -> label) of one predict.

    The peak memory is the largest RSS of the process and its child processes together, read every
    0.1 s, and never less than the peak RSS (VmHWM) any one of them reached."""
    started = time.perf_counter()
    process = subprocess.Popen([*command, "--csv", str(out)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    peak_kb = 0
    while process.poll() is None:  # read while it runs: the processes' RSS together, and each one's own peak
        pids = [process.pid, *_descendants(process.pid)]
        peak_kb = max(peak_kb, sum(_vm_kb(pid, "VmRSS") for pid in pids), *(_vm_kb(pid, "VmHWM") for pid in pids))
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    errors = process.stderr.read() if process.stderr else ""
    if process.returncode != 0:
        raise SystemExit(errors)
    with out.open(newline="") as handle:
        labels = {row["path"]: row["label"] for row in csv.DictReader(handle)}
    return len(labels) / seconds, peak_kb / 1024, labels


def changed_from_the_python_api(run_dir: Path, labels: dict[str, str], count: int = 1000) -> int:
    """How many of the first `count` answers `graft.load(RUN).predict` (torchvision's resizing) gives differently."""
    import graft

    paths = sorted(labels)[:count]
    answers = graft.load(run_dir).predict(paths, top_k=1)
    return sum(answer.label != labels[path] for path, answer in zip(paths, answers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--img-size", type=int, default=None)
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="graft-predict-"))
    env = {**os.environ, "GRAFT_CACHE": str(work / "cache")}
    graft = [sys.executable, "-c", "from graft.cli.main import main; main()"]
    size = ["--img-size", str(options.img_size)] if options.img_size else []
    run_dir = train_small_probe(options.data, work, env, size)
    model = work / "model.onnx"
    subprocess.run([*graft, "export", str(run_dir), "--out", str(model)], env=env, check=True, capture_output=True)

    files = sorted(p for p in options.data.rglob("*") if p.suffix.lower() in EXTENSIONS)
    folder = work / "images"
    folder.mkdir()
    for index in range(options.images):
        source = files[index % len(files)]
        (folder / f"{index:06d}{source.suffix}").symlink_to(source.resolve())

    command = [*graft, "predict", str(run_dir), str(folder), "--engine", options.engine]
    first_rate, first_peak, _ = timed_predict(command, work / "run-first.csv", env)
    print(f"first predict of the run (from the export training left, or exporting it): {first_rate:.1f} img/s, peak RSS "
          f"{first_peak:.0f} MB", flush=True)
    measured: dict[str, list[float]] = {key: [] for key in ("bare", "run", "run_rss", "bare_onnx", "onnx", "onnx_rss")}
    changed = 0
    for round_ in range(1, options.rounds + 1):
        # Each predict is set against the mean of the bare rates measured just before and just after
        # it: this shared VM's speed drifts by up to a third within minutes, in both directions.
        before, engine = bare_rate(run_dir, engine=options.engine, images=options.images, seconds=10.0)
        rate, peak, from_run = timed_predict(command, work / f"run-{round_}.csv", env)
        after, _ = bare_rate(run_dir, engine=options.engine, images=options.images, seconds=10.0)
        measured["bare"].append((before + after) / 2)
        measured["run"].append(rate)
        measured["run_rss"].append(peak)
        before = exported_bare_rate(model, seconds=10.0)
        rate, peak, from_export = timed_predict([*graft, "predict", str(model), str(folder)], work / f"onnx-{round_}.csv", env)
        measured["bare_onnx"].append((before + exported_bare_rate(model, seconds=10.0)) / 2)
        measured["onnx"].append(rate)
        measured["onnx_rss"].append(peak)
        changed = sum(from_run[path] != label for path, label in from_export.items())
        print(f"round {round_}: run folder: bare ({engine}) {measured['bare'][-1]:.1f} img/s, predict "
              f"{measured['run'][-1]:.1f} img/s, peak RSS {measured['run_rss'][-1]:.0f} MB | model.onnx: bare "
              f"{measured['bare_onnx'][-1]:.1f} img/s, predict {measured['onnx'][-1]:.1f} img/s, peak RSS "
              f"{measured['onnx_rss'][-1]:.0f} MB | {changed} of {len(from_export)} answers differ", flush=True)
    changed_api = changed_from_the_python_api(run_dir, from_run)
    median = {key: statistics.median(values) for key, values in measured.items()}
    run_ratios = [p / b for p, b in zip(measured["run"], measured["bare"])]
    onnx_ratios = [p / b for p, b in zip(measured["onnx"], measured["bare_onnx"])]
    summary = {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
        "images": options.images, "rounds": options.rounds, "engine": engine, "img_size": options.img_size or 224,
        "first_predict_img_s": round(first_rate, 1), "first_predict_peak_rss_mb": round(first_peak),
        "bare_img_s": round(median["bare"], 1), "predict_img_s": round(median["run"], 1),
        "ratio": round(statistics.median(run_ratios), 3), "ratios": [round(r, 3) for r in run_ratios],
        "peak_rss_mb": round(max(measured["run_rss"])), "peak_rss_mb_rounds": [round(v) for v in measured["run_rss"]],
        "onnx_bare_img_s": round(median["bare_onnx"], 1), "onnx_predict_img_s": round(median["onnx"], 1),
        "onnx_ratio": round(statistics.median(onnx_ratios), 3), "onnx_ratios": [round(r, 3) for r in onnx_ratios],
        "onnx_peak_rss_mb": round(max(measured["onnx_rss"])), "onnx_changed_answers": changed,
        "python_api_changed_answers_of_1000": changed_api,
    }
    print(f"median: run folder {summary['predict_img_s']} img/s = {summary['ratio']} x bare, peak RSS "
          f"{summary['peak_rss_mb']} MB; model.onnx {summary['onnx_predict_img_s']} img/s = {summary['onnx_ratio']} x bare, "
          f"peak RSS {summary['onnx_peak_rss_mb']} MB (targets: >= 0.85, <= 1024 MB); the first predict "
          f"{summary['first_predict_img_s']} img/s, peak RSS {summary['first_predict_peak_rss_mb']} MB; "
          f"{changed_api} of the first 1,000 answers differ from graft.load(RUN).predict")
    key = "predict" if options.images == 10_000 else f"predict_{options.images}"
    store({key if options.data.name == "cifar10-dev" else f"{key}_{options.data.name}": {**summary, "data": str(options.data)}})


if __name__ == "__main__":
    main()
