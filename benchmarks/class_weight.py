"""Does `--class-weight balanced` help when one class has few training images?

    python benchmarks/class_weight.py [--shared ../shared/datasets] [--rare 10]

Two imbalanced versions of real photo sets, each with a balanced test split: every class keeps
its training images but one (the first alphabetically), which keeps only `--rare`. For each,
`graft train --strategy S --class-weight none|balanced` (S: linear-probe and feature-extract; one
shared feature cache, so both settings see the same features), reading from each run's metrics.json:
test accuracy, balanced accuracy (the mean of the per-class recalls) and the rare class's recall.
- flowers: flowers-dev, 224 px (80 training photos per class after the val split; rare: daisy);
- cifar5: 5 CIFAR-10 classes (airplane, automobile, bird, cat, deer), 100 training images each,
  64 px, 100 test images each (rare: airplane).
Prints a markdown table and stores it under "class_weight" in benchmarks/results.json.
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

STRATEGIES = ("linear-probe", "feature-extract")


def imbalanced(source: Path, root: Path, *, classes: list[str] | None, per_class: int | None, rare: int,
               test: int | None) -> Path:
    """root/train/<class>/ (links; the first class cut to `rare` images) and root/test/<class>/."""
    names = classes or sorted(p.name for p in (source / "train").iterdir())
    for split in ("train", "test"):
        for index, name in enumerate(names):
            images = sorted((source / split / name).iterdir())
            keep = (rare if index == 0 else per_class) if split == "train" else test
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for image in images[:keep]:
                (folder / image.name).symlink_to(image.resolve())
    return root


def run(data: Path, key: str, strategy: str, weight: str, extra: list[str], work: Path) -> dict:
    name = f"{key}-{strategy}-{weight}"
    args = [sys.executable, "-c", "from graft.cli.main import main; main()", "train", str(data), "--strategy", strategy,
            "--class-weight", weight, "--out", str(work / "runs"), "--name", name, "--cache-dir", str(work / "cache"),
            "--no-report", "--no-audit", *extra]
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    test = json.loads((work / "runs" / name / "metrics.json").read_text())["evaluations"]["test"]
    recalls = [row["recall"] for row in test["per_class"].values()]
    rare = sorted(test["per_class"])[0]
    return {"data": key, "strategy": strategy, "class_weight": weight, "test": round(test["accuracy"], 4),
            "balanced": round(sum(recalls) / len(recalls), 4), "rare_class": rare,
            "rare_recall": round(test["per_class"][rare]["recall"], 4), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets")
    parser.add_argument("--rare", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="graft-class-weight-"))
    sets = {
        "flowers": (imbalanced(args.shared / "flowers-dev", work / "flowers", classes=None, per_class=None,
                               rare=args.rare, test=None), ["--img-size", "224"]),
        "cifar5": (imbalanced(args.shared / "cifar10-dev", work / "cifar5",
                              classes=["airplane", "automobile", "bird", "cat", "deer"], per_class=100,
                              rare=args.rare, test=100), ["--img-size", "64"]),
    }
    rows = []
    for key, (data, extra) in sets.items():
        for strategy in STRATEGIES:
            for weight in ("none", "balanced"):
                row = run(data, key, strategy, weight, extra, work)
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(f"\n{args.rare} training images in the rare class\n"
          "| data | strategy | class weight | test accuracy | balanced accuracy | rare class recall | time (s) |\n"
          "|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['data']} | {row['strategy']} | {row['class_weight']} | {row['test']:.1%} | {row['balanced']:.1%} | "
              f"{row['rare_recall']:.1%} ({row['rare_class']}) | {row['seconds']} |")
    store({"class_weight": {"rows": rows, "rare": args.rare, "date": time.strftime("%Y-%m-%d")}})


if __name__ == "__main__":
    main()
