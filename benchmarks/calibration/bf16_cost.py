"""What bf16 costs in accuracy against fp32, on real photos: the measurement behind graft's precision default.

    python -m benchmarks.calibration.bf16_cost [--shared ../shared/datasets] [--only probe,finetune]
        [--epochs 3] [--key bf16_cost]

- probe: `graft train --strategy linear-probe` on flowers-dev (224 px) and on cifar10-dev (100
  training images per class, 64 px), once with `--precision 32` (features from ONNX Runtime in fp32,
  the default since issue 24) and once with `--precision bf16` (torch's bf16 autocast: what auto
  did on CPUs with native bf16 before). Reads each run's C, val and test accuracy, and counts the
  test images whose answer differs between the two.
- finetune: `graft train --strategy finetune --epochs E` on flowers-dev three ways: `--precision
  32` (fp32 training and inference), `--precision auto` (bf16-mixed training where the CPU has native
  bf16, fp32 inference: the default) and `--precision bf16` (both bf16). Reads test accuracy and the
  mean image-epoch time from each run's metrics.json.

Each run is a `graft train` process with a feature cache of its own (the features are what is
measured). Prints a markdown table and stores the rows under KEY in benchmarks/results.json. On a
CPU without native bf16, bf16 is emulated and several times slower: the table says which this was.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from .._results import provenance, record
from .._runs import SHARED_DATASETS, run_graft, train_subset


def _train(data: Path, work: Path, name: str, *options: str) -> dict:
    started = time.perf_counter()
    run_graft("train", data, "--out", work / "runs", "--name", name, "--cache-dir", work / name, "--no-report",
              "--no-audit", "--budget", "0", *options)
    seconds = time.perf_counter() - started
    folder = work / "runs" / name
    metrics = json.loads((folder / "metrics.json").read_text())
    images = [row["epoch_time_s"] for row in metrics["history"] if row["phase"] == "images"]
    run_graft("evaluate", folder, data / "test", "-o", folder / "test-evaluation.json")  # each image's answer
    answers = (folder / "test-evaluation-predictions.csv").read_text().splitlines()[1:]
    return {"val": metrics["val_accuracy"], "test": metrics.get("test_accuracy"), "C": metrics.get("logreg_c"),
            "seconds": round(seconds, 1), "image_epoch_s": round(sum(images) / len(images), 1) if images else None,
            "answers": [line.split(",")[2] for line in answers]}


def probe(shared: Path, work: Path) -> list[dict]:
    sets = [("flowers-dev", shared / "flowers-dev", ["--img-size", "224"]),
            ("cifar10-dev, 100 per class", train_subset(shared / "cifar10-dev", work / "cifar100pc", train_per_class=100), ["--img-size", "64"])]
    rows = []
    for label, data, size in sets:
        runs = {precision: _train(data, work, f"probe-{label[:6]}-{precision}", "--strategy", "linear-probe",
                                  "--precision", precision, *size) for precision in ("32", "bf16")}
        differ = sum(a != b for a, b in zip(runs["32"]["answers"], runs["bf16"]["answers"]))
        rows.append({"data": label, "strategy": "linear-probe", **{f"{key} {p}": runs[p][key] for p in runs
                                                                 for key in ("C", "val", "test", "seconds")},
                     "test answers that differ": f"{differ} of {len(runs['32']['answers'])}"})
    return rows


def finetune(shared: Path, work: Path, epochs: int) -> list[dict]:
    data = shared / "flowers-dev"
    runs = {precision: _train(data, work, f"finetune-{precision}", "--strategy", "finetune", "--precision", precision,
                              "--epochs", str(epochs), "--img-size", "224") for precision in ("32", "auto", "bf16")}
    return [{"data": "flowers-dev", "strategy": f"finetune, {epochs} epochs", "precision": precision,
             "val": run["val"], "test": run["test"], "image epoch (s)": run["image_epoch_s"], "seconds": run["seconds"],
             "test answers that differ from fp32": sum(a != b for a, b in zip(run["answers"], runs["32"]["answers"]))}
            for precision, run in runs.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=SHARED_DATASETS)
    parser.add_argument("--only", default="probe,finetune")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--key", default="bf16_cost")
    args = parser.parse_args()
    about = provenance(parameters={"only": args.only, "epochs": args.epochs})
    rows = []
    with tempfile.TemporaryDirectory(prefix="graft-bf16-") as folder:
        work = Path(folder)
        if "probe" in args.only:
            rows += probe(args.shared, work)
        if "finetune" in args.only:
            rows += finetune(args.shared, work, args.epochs)
    for row in rows:
        print(" | ".join(f"{key}: {value}" for key, value in row.items()))
    record(args.key, {"rows": rows}, about)


if __name__ == "__main__":
    main()
