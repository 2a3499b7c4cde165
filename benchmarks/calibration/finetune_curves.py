"""How fine-tuning's val accuracy climbs epoch by epoch against the linear probe's: the data behind
probe-finetune's rule for stopping fine-tuning that cannot catch the probe (issue 24).

    python -m benchmarks.calibration.finetune_curves [--shared ../shared/datasets] [--only flowers,catdog]
        [--epochs 5] [--key finetune_curves]

For each set (auto_calibrate's builders, plus held-out ones the rule was not tuned on: flowers-dev
with 60 training photos per class, and five CIFAR-10 classes at 100 per class), two `graft train`
processes sharing one feature cache: `--strategy linear-probe` (its val and test accuracy, its time)
and `--strategy probe-finetune --epochs E --budget 0` with no early stop of graft's own beyond
--patience (each image epoch's val accuracy and time, the test accuracy of the model kept, the time).
Prints the curves and stores them under KEY in benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from .._results import provenance, record
from .._runs import SHARED_DATASETS, run_graft, train_subset
from .auto_calibrate import RUNS, build, build_classes

TUNED = ("flowers", "catdog", "digits", "flowers-grey", "cifar3")
HELD_OUT = ("flowers60", "cifar5")


def build_any(key: str, shared: Path, work: Path) -> tuple[Path, list[str]]:
    """The data set and its size options."""
    if key == "flowers60":  # flowers-dev with 60 training photos per class (80 after graft's val split before)
        return train_subset(shared / "flowers-dev", work / key, train_per_class=75), ["--img-size", "224"]
    if key == "cifar5":
        names = ("airplane", "automobile", "bird", "frog", "ship")
        return build_classes(shared / "cifar10-dev", work / key, names, train=125, test=100), ["--img-size", "64"]
    return build(key, shared, work), [option for option in RUNS[key][0] if option != "--budget"]


def _run(data: Path, work: Path, name: str, *options: str) -> dict:
    started = time.perf_counter()
    run_graft("train", data, "--out", work / "runs", "--name", name, "--cache-dir", work / "cache", "--no-report",
              "--no-audit", *options)
    metrics = json.loads((work / "runs" / name / "metrics.json").read_text())
    images = [row for row in metrics["history"] if row["phase"] == "images"]
    return {"seconds": round(time.perf_counter() - started, 1), "val": metrics["val_accuracy"],
            "test": metrics.get("test_accuracy"), "curve": [round(row["val_acc"], 4) for row in images],
            "epoch_s": [round(row["epoch_time_s"], 1) for row in images]}


def measure(key: str, shared: Path, work: Path, epochs: int) -> dict:
    data, size = build_any(key, shared, work)
    probe = _run(data, work, f"{key}-probe", "--strategy", "linear-probe", *size)
    tuned = _run(data, work, f"{key}-tuned", "--strategy", "probe-finetune", "--epochs", str(epochs), "--budget", "0",
                 *size)
    return {"set": key, "held_out": key in HELD_OUT, "probe_val": probe["val"], "probe_test": probe["test"],
            "probe_s": probe["seconds"], "tuned_curve": tuned["curve"], "tuned_epoch_s": tuned["epoch_s"],
            "tuned_val": tuned["val"], "tuned_test": tuned["test"], "tuned_s": tuned["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=SHARED_DATASETS)
    parser.add_argument("--only", default=",".join(TUNED + HELD_OUT))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--key", default="finetune_curves")
    args = parser.parse_args()
    about = provenance(parameters={"only": args.only, "epochs": args.epochs})
    rows = []
    with tempfile.TemporaryDirectory(prefix="graft-curves-") as folder:
        for key in args.only.split(","):
            rows.append(measure(key, args.shared, Path(folder), args.epochs))
            print(json.dumps(rows[-1]), flush=True)
    record(args.key, {"rows": rows}, about)


if __name__ == "__main__":
    main()
