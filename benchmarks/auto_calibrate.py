"""The default (`--strategy auto`) against the strategies it chooses between, on real photos.

    python benchmarks/auto_calibrate.py [--shared ../shared/datasets] [--only flowers,cifar3,cifar10]

Each row is one `graft train` process as a user types it (a cold feature cache of its own, so every
run pays for its features), timed from start to end; val and test accuracy come from the run's
metrics.json. Data sets:
- flowers: flowers-dev (5 classes; 80 training photos per class after the val split, 50 test), 224 px;
- cifar3: 3 CIFAR-10 classes (airplane, cat, ship), 40 training images each, 64 px (issue #11's case);
- cifar10: cifar10-dev (4,500 train, 500 val, 1,000 test), 224 px, auto with --budget 30m.
Prints a markdown table and stores it under "auto" in benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import store

RUNS = {
    # name: (data builder, extra args, strategies to run)
    "flowers": (["--img-size", "224"], ["auto", "linear-probe", "finetune"]),
    "cifar3": (["--img-size", "64"], ["auto", "linear-probe", "finetune"]),
    "cifar10": (["--img-size", "224", "--val-split", "0.1", "--budget", "30m"], ["auto", "linear-probe"]),
}


def build_cifar3(shared: Path, root: Path) -> Path:
    """train/<class>/ with 40 images and test/<class>/ with 40 of 3 CIFAR-10 classes, as links."""
    for split, count in (("train", 40), ("test", 40)):
        for name in ("airplane", "cat", "ship"):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for image in sorted((shared / "cifar10-dev" / split / name).iterdir())[:count]:
                (folder / image.name).symlink_to(image)
    return root


def run(data: Path, strategy: str, extra: list[str], work: Path) -> dict:
    name = f"{data.name}-{strategy}"
    args = [sys.executable, "-c", "from graft.cli.main import main; main()", "train", str(data), "--strategy", strategy,
            "--out", str(work / "runs"), "--name", name, "--cache-dir", str(work / f"cache-{name}"), "--no-report", *extra]
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    run_dir = work / "runs" / name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    record = json.loads((run_dir / "graft.json").read_text())
    decisions = [line for line in result.stdout.splitlines() if line.startswith("auto:")]
    return {"data": data.name, "strategy": strategy, "kept": record["strategy"], "seconds": round(seconds, 1),
            "val": metrics["val_accuracy"], "test": (metrics["evaluations"].get("test") or {}).get("accuracy"),
            "auto": decisions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets")
    parser.add_argument("--only", default=",".join(RUNS))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="graft-auto-"))
    datasets = {"flowers": args.shared / "flowers-dev", "cifar10": args.shared / "cifar10-dev",
                "cifar3": build_cifar3(args.shared, work / "cifar3")}
    rows = []
    for key in args.only.split(","):
        extra, strategies = RUNS[key]
        for strategy in strategies:
            row = run(datasets[key], strategy, extra, work)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("| data | strategy | model kept | val | test | time (s) |\n|---|---|---|---|---|---|")
    for row in rows:
        test = "-" if row["test"] is None else f"{row['test']:.1%}"
        print(f"| {row['data']} | {row['strategy']} | {row['kept']} | {row['val']:.1%} | {test} | {row['seconds']} |")
    # rows of data sets not run this time are kept (--only reruns some)
    from _results import RESULTS

    kept = json.loads(RESULTS.read_text()).get("auto", {}).get("rows", []) if RESULTS.exists() else []
    fresh = {(row["data"], row["strategy"]) for row in rows}
    merged = [row for row in kept if (row["data"], row["strategy"]) not in fresh] + rows
    store({"auto": {"rows": merged, "date": time.strftime("%Y-%m-%d")}})


if __name__ == "__main__":
    main()
