"""A fine-tuned run's export at the end of its training: its backbone's template given its weights.

    python benchmarks/finetune_export.py --data ../shared/datasets/flowers-dev [--rounds 3]

In a work folder with its own GRAFT_CACHE (so the first run finds no graph): two one-epoch
`graft train --strategy finetune` runs on 20 images per class of DATA/train (seeds 0 and 1). The
first traces its backbone's template (once per backbone and size), the second only gives it its
weights. For each: the whole run's seconds and `export_s` from its metrics.json. Then the second
run's first `graft predict RUN DATA/test --csv`: images/s from the process's start to its end, and
the peak RSS of it and any child (benchmarks/predict.py's timed_predict), and how many of its top-1
answers `graft.load(RUN).predict` gives differently (torch in fp32 there, as in the export: on a
CPU with native bf16 graft's torch would otherwise run bf16, which moves answers on its own). Last, in interleaved rounds of 10 s each, the
bare forward rate of that kept export and of `graft export RUN` (the whole model traced) in ONNX
Runtime. Stores everything under "finetune_export" in benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import machine, store
from _runs import train_small
from predict import changed_from_the_python_api, exported_bare_rate, timed_predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()

    from graft.export.cached import export_path

    work = Path(tempfile.mkdtemp(prefix="graft-finetune-export-"))
    os.environ["GRAFT_CACHE"] = str(work / "cache")  # this process reads the kept export from there too
    env = dict(os.environ)
    runs = []
    for seed in (0, 1):
        started = time.perf_counter()
        run_dir = train_small(options.data, work, env, strategy="finetune", name=f"tuned-{seed}",
                              extra=["--epochs", "1", "--seed", str(seed)])
        seconds = time.perf_counter() - started
        export_s = json.loads((run_dir / "metrics.json").read_text())["timings"].get("export_s")
        runs.append({"seconds": round(seconds, 1), "export_s": None if export_s is None else round(export_s, 2)})
        print(f"finetune, seed {seed}: {seconds:.1f} s, of which the export {export_s} s", flush=True)
    graft = [sys.executable, "-c", "from graft.cli.main import main; main()"]
    rate, peak, labels = timed_predict([*graft, "predict", str(run_dir), str(options.data / "test")],
                                       work / "first.csv", env)
    os.environ["GRAFT_CPU_BF16"] = "0"  # torch in fp32, as the export: only the export's own differences count
    changed = changed_from_the_python_api(run_dir, labels, count=len(labels))
    print(f"first predict of the second run: {rate:.1f} img/s, peak RSS {peak:.0f} MB; {changed} of {len(labels)} "
          "top-1 answers differ from graft.load(RUN).predict", flush=True)
    kept, traced = export_path(run_dir), work / "model.onnx"
    subprocess.run([*graft, "export", str(run_dir), "--out", str(traced)], env=env, check=True, capture_output=True)
    rates: dict[str, list[float]] = {"kept": [], "traced": []}
    for round_ in range(1, options.rounds + 1):
        rates["kept"].append(exported_bare_rate(kept, seconds=10.0))
        rates["traced"].append(exported_bare_rate(traced, seconds=10.0))
        print(f"round {round_}: bare, the kept export {rates['kept'][-1]:.1f} img/s, graft export's "
              f"{rates['traced'][-1]:.1f}", flush=True)
    store({"finetune_export": {
        "date": time.strftime("%Y-%m-%d"), "machine": machine(), "data": str(options.data), "runs": runs,
        "first_predict_img_s": round(rate, 1), "first_predict_peak_rss_mb": round(peak), "images": len(labels),
        "changed_from_python_api": changed, **{f"bare_{key}": [round(v, 1) for v in values] for key, values in rates.items()},
        "bare_ratio_kept_to_traced": round(statistics.median(k / t for k, t in zip(rates["kept"], rates["traced"])), 3),
    }})


if __name__ == "__main__":
    main()
