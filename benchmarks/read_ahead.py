"""Reading the next batch while ONNX Runtime runs this one: `ExportedModel.predict_iter` against
reading and predicting in turn, on real photos.

    python benchmarks/read_ahead.py --data ../shared/datasets/flowers-dev [--images 3000] [--rounds 2]

A linear-probe Lite0 run on 20 images per class of DATA/train (benchmarks/_runs.py) and its ONNX
export; then `--images` files (DATA's images, repeated). In interleaved rounds, each in this
process on the same files: (1) the bare forward pass, ONNX Runtime threads spinning while idle (its
default) on uint8 batches of 64 in memory, 15 s; (2) read a batch of 64, predict it, read the next,
with that session: graft's way before the read-ahead; (3) the bare forward pass in graft's session
(idle threads sleeping; since graft.engines.sliced also its slices side by side, which
benchmarks/sliced.py measures on its own); (4) `ExportedModel.predict_iter` as graft runs it: the
next batch read in a thread while this one runs. Prints images/s; stores them under "read_ahead" in
benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
from _results import store
from _runs import repeated_files, small_probe_export


class _SpinningSession:
    """ONNX Runtime's default session (idle threads spin), its slices run one after another."""

    def __init__(self, path: Path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        from graft.runtime import run_in_slices

        return run_in_slices(lambda batch: self.session.run(["probabilities"], {"pixels": batch})[0], pixels)


def spinning(model):
    """The same model in a session whose idle threads spin (ONNX Runtime's default)."""
    from graft.export.exported import ExportedModel

    copy = ExportedModel(model.path)
    copy.session = _SpinningSession(model.path)
    return copy


def bare(model, seconds: float = 15.0) -> float:
    pixels = np.random.default_rng(0).integers(0, 256, (64, *model.input_size), dtype=np.uint8)
    model.probabilities(pixels)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.probabilities(pixels)
        done += len(pixels)
    return done / (time.perf_counter() - started)


def in_turn(model, paths: list[Path]) -> float:
    started = time.perf_counter()
    for start in range(0, len(paths), 64):
        batch, _ = model.read_batch(paths, range(start, min(start + 64, len(paths))))
        model.probabilities(batch)
    return len(paths) / (time.perf_counter() - started)


def read_ahead(model, paths: list[Path]) -> float:
    started = time.perf_counter()
    for _ in model.predict_iter(paths, top_k=3):
        pass
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()

    from graft.export.exported import ExportedModel

    _, model_file = small_probe_export(options.data, "graft-read-ahead-")
    paths = repeated_files(options.data, options.images)
    sleeping = ExportedModel(model_file)
    spinning_model = spinning(sleeping)
    rows: dict[str, list[float]] = {"bare_spinning": [], "in_turn_spinning": [], "bare_sleeping": [], "read_ahead": []}
    for round_ in range(1, options.rounds + 1):
        rows["bare_spinning"].append(bare(spinning_model))
        rows["in_turn_spinning"].append(in_turn(spinning_model, paths))
        rows["bare_sleeping"].append(bare(sleeping))
        rows["read_ahead"].append(read_ahead(sleeping, paths))
        print(f"round {round_}: " + ", ".join(f"{key} {values[-1]:.1f} img/s" for key, values in rows.items()), flush=True)
    store({"read_ahead": {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                          "python": sys.version.split()[0], "data": str(options.data), "images": options.images,
                          **{key: [round(v, 1) for v in values] for key, values in rows.items()}}})


if __name__ == "__main__":
    main()
