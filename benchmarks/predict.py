"""Batch prediction: `graft predict --csv` (run folder, model.onnx) over the bare engine, and its memory.

1. A Lite0 model trained on 20 images per class of DATA/train (_runs.py `small_model`): a linear
   probe, or with STRATEGY=finetune one image epoch of fine-tuning (whose export at the end of
   training gives the fine-tuned weights to its backbone's template); `export_s` from its
   metrics.json; and its `graft export` as model.onnx.
2. IMAGES files: links to every image under DATA, repeated; or with PHOTO_SIDE, DATA/test's images
   enlarged to PHOTO_SIDE px on their short side as JPEGs (3024: 12-megapixel phone photos), repeated.
3. The first `graft predict RUN FOLDER --csv OUT --engine ENGINE`, as a user types it after training.
4. ROUNDS interleaved rounds, each command set against the mean of the bare rate measured for
   BARE_SECONDS just before it and just after it: (a) bare: what `graft predict RUN` runs (the run's
   export kept in graft's cache, in ONNX Runtime; where there is none, the model in graft.engines)
   on uint8 batches of 64 in memory; (b) `graft predict RUN`, timed from the process's start to its
   end; (c) bare: model.onnx in ONNX Runtime; (d) `graft predict model.onnx`.
Memory: the largest RSS of the command and its child processes together (`watch`). Ratios (b)/(a)
and (d)/(c), target at least 0.85; peak RSS target at most 1 GB; and how many top-1 answers (b) and
(d) give differently.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ._runs import (
    Context,
    Parameter,
    enlarged,
    environment,
    frozen_pass,
    graft_command,
    image_files,
    interleaved,
    linked_files,
    onnx_bare_rate,
    run_graft,
    small_model,
    torch_bare_rate,
    watch,
)

PARAMETERS = {
    "images": Parameter(10_000, 200, "files predicted by each command"),
    "rounds": Parameter(3, 1, "interleaved rounds"),
    "engine": Parameter("auto", "auto", "graft predict RUN --engine"),
    "img_size": Parameter(0, 64, "the model's input size in px; 0: the backbone's own (224)"),
    "photo_side": Parameter(0, 0, "0: DATA's files as they are; N: DATA/test's images enlarged to N px (camera photos)"),
    "bare_seconds": Parameter(10.0, 1.0, "seconds of each bare measurement"),
    "strategy": Parameter("linear-probe", "linear-probe", "the model's strategy: linear-probe, or finetune (one image epoch)"),
}
RATIO_TARGET, MEMORY_TARGET_MB = 0.85, 1024


def key(values: dict) -> str:
    """"predict", with what differs from the default setting after it (other data, size, engine, photos)."""
    parts = [f"{values[name]}{unit}" for name, unit, default in (("images", "", 10_000), ("img_size", "px", 0),
                                                                ("photo_side", "px-photos", 0), ("engine", "", "auto"),
                                                                ("strategy", "", "linear-probe"))
             if values[name] != default]
    return "_".join(["predict", *parts])


def bare_of_run(run_dir: Path, env: dict[str, str], *, engine: str, seconds: float) -> tuple[float, dict]:
    """Images/s of what `graft predict RUN` runs, alone, and which engine that is."""
    import torch

    import graft
    from graft.export.cached import export_path

    with environment(env):
        kept = export_path(run_dir)
        if kept.exists():
            return onnx_bare_rate(kept, seconds=seconds), {"engine": "onnxruntime (the run's kept export)"}
        classifier = graft.load(run_dir)
        runtime = classifier.inference_runtime(64, engine=engine)
        size = classifier.data_config.input_size
        pixels = torch.randint(0, 256, (64, *size), dtype=torch.uint8)
        with frozen_pass(classifier.model, runtime=runtime, input_size=size) as forward:
            return torch_bare_rate(forward, pixels, seconds=seconds), {"engine": forward.engine}


def predict(command: list[str], out: Path, env: dict[str, str]) -> tuple[float, dict]:
    """(images/s from the process's start to its end, {peak RSS, path -> label}) of one `graft predict --csv`."""
    watched = watch([*command, "--csv", str(out)], env=env)
    with out.open(newline="") as handle:
        labels = {row["path"]: row["label"] for row in csv.DictReader(handle)}
    return len(labels) / watched.seconds, {"peak_rss_mb": watched.peak_rss_mb, "labels": labels}


def run(context: Context, *, images: int, rounds: int, engine: str, img_size: int, photo_side: int,
        bare_seconds: float, strategy: str) -> dict:
    run_dir, env = small_model(context, strategy=strategy, img_size=img_size)
    export_s = json.loads((run_dir / "metrics.json").read_text())["timings"].get("export_s")
    model = context.work / "model.onnx"
    run_graft("export", run_dir, "--out", model, env=env)
    sources = (enlarged(image_files(context.data / "test"), context.work / "photos", photo_side) if photo_side
               else image_files(context.data))
    folder = linked_files(sources, context.work / "images", images)
    from_run = [*graft_command("predict", run_dir, folder, "--engine", engine)]
    from_onnx = [*graft_command("predict", model, folder)]
    first_rate, first = predict(from_run, context.work / "first.csv", env)
    context.log(f"the first graft predict RUN: {first_rate:.1f} img/s, peak RSS {first['peak_rss_mb']:.0f} MB")
    outputs = iter(range(10**6))
    pairs = interleaved(rounds, {
        "run": (lambda: bare_of_run(run_dir, env, engine=engine, seconds=bare_seconds),
                lambda: predict(from_run, context.work / f"run-{next(outputs)}.csv", env)),
        "onnx": (lambda: onnx_bare_rate(model, seconds=bare_seconds),
                 lambda: predict(from_onnx, context.work / f"onnx-{next(outputs)}.csv", env)),
    }, bracket=True, log=context.log)
    run_pair, onnx_pair = pairs["run"], pairs["onnx"]
    differing = sum(run_pair.extras[-1]["labels"][path] != label for path, label in onnx_pair.extras[-1]["labels"].items())
    run_peak = max(extra["peak_rss_mb"] for extra in run_pair.extras)
    onnx_peak = max(extra["peak_rss_mb"] for extra in onnx_pair.extras)
    return {
        "summary": f"graft predict RUN {run_pair.ratio:.2f} x bare, peak {run_peak:.0f} MB; graft predict model.onnx "
                   f"{onnx_pair.ratio:.2f} x bare, peak {onnx_peak:.0f} MB (targets >= {RATIO_TARGET}, <= "
                   f"{MEMORY_TARGET_MB} MB); {differing} of {images} answers differ",
        "images": images, "bare_engine": run_pair.baseline_extras[0].get("engine"),
        "export_at_end_of_training_s": export_s,
        "first_predict": {"img_per_s": round(first_rate, 1), "peak_rss_mb": round(first["peak_rss_mb"])},
        "run_folder": {"img_per_s": run_pair.summary(1), "ratio": round(run_pair.ratio, 3),
                       "peak_rss_mb": [round(extra["peak_rss_mb"]) for extra in run_pair.extras]},
        "model_onnx": {"img_per_s": onnx_pair.summary(1), "ratio": round(onnx_pair.ratio, 3),
                       "peak_rss_mb": [round(extra["peak_rss_mb"]) for extra in onnx_pair.extras]},
        "answers_differing": differing, "targets": {"ratio": RATIO_TARGET, "peak_rss_mb": MEMORY_TARGET_MB},
    }
