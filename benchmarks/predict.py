"""`graft predict RUN FOLDER --csv` against the bare forward pass of the same model, and its memory.

    python benchmarks/predict.py --data ../shared/datasets/cifar10-dev [--images 10000] [--rounds 3]
        [--engine auto|torch|onnxruntime|openvino] [--img-size 224]

1. A linear-probe run on 20 images per class of DATA/train (img size: --img-size, default the
   backbone's own, 224 px), so the model is a real Lite0 classifier.
2. The image list: every image under DATA, repeated (as symlinks in a temporary folder) up to
   `--images` files, so the command reads that many files.
3. In interleaved rounds: (a) the bare forward rate: the model on random uint8 batches of 64 already
   in memory, in the engine `graft predict` picks for that many images (graft.engines; the graph
   traced before the timing) at graft's precision, for about as many images as 20 s allows; (b)
   `graft predict RUN FOLDER --csv OUT --engine ENGINE` as a user types it, timed from the start of the process to its end, with its
   peak RSS (VmHWM of the process, read while it runs; loader workers, where there are any, apart).
Prints images/s of each, the ratio (b)/(a) (target >= 0.85) and peak RSS (target <= 1 GB); writes
them under "predict" (or "predict_IMAGES" for another --images) in benchmarks/results.json.
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
    """Images/s of the model alone in the engine `graft predict` uses for `images` images, and that engine."""
    import torch

    import graft
    from graft.engines import frozen_forward
    from graft.runtime import Runtime

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


def _vm_hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return 0


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

    files = sorted(p for p in options.data.rglob("*") if p.suffix.lower() in EXTENSIONS)
    folder = work / "images"
    folder.mkdir()
    for index in range(options.images):
        source = files[index % len(files)]
        (folder / f"{index:06d}{source.suffix}").symlink_to(source.resolve())

    bare, piped, peaks = [], [], []
    for round_ in range(1, options.rounds + 1):
        rate, engine = bare_rate(run_dir, engine=options.engine, images=options.images)
        bare.append(rate)
        out = work / f"predictions-{round_}.csv"
        started = time.perf_counter()
        process = subprocess.Popen([*graft, "predict", str(run_dir), str(folder), "--csv", str(out),
                                    "--engine", options.engine], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak_kb = 0
        while process.poll() is None:  # VmHWM of this process itself, read while it runs
            peak_kb = max(peak_kb, _vm_hwm_kb(process.pid))
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        errors = process.stderr.read() if process.stderr else ""
        if process.returncode != 0:
            raise SystemExit(errors)
        with out.open() as handle:
            rows = sum(1 for _ in csv.reader(handle)) - 1
        piped.append(rows / seconds)
        peaks.append(peak_kb / 1024)
        print(f"round {round_}: bare ({engine}) {bare[-1]:.1f} img/s, graft predict --csv {piped[-1]:.1f} img/s "
              f"({rows} rows in {seconds:.1f} s), peak RSS {peaks[-1]:.0f} MB")
    ratios = [p / b for p, b in zip(piped, bare)]
    summary = {
        "date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
        "images": options.images, "rounds": options.rounds, "engine": engine, "img_size": options.img_size or 224,
        "bare_img_s": round(statistics.median(bare), 1), "predict_img_s": round(statistics.median(piped), 1),
        "ratio": round(statistics.median(ratios), 3), "ratios": [round(r, 3) for r in ratios],
        "peak_rss_mb": round(max(peaks)),
    }
    print(f"median: bare {summary['bare_img_s']} img/s, predict {summary['predict_img_s']} img/s, ratio "
          f"{summary['ratio']} (target >= 0.85), peak RSS {summary['peak_rss_mb']} MB (target <= 1024)")
    store({"predict" if options.images == 10_000 else f"predict_{options.images}": summary})


if __name__ == "__main__":
    main()
