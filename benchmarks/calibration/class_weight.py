"""Does `--class-weight balanced`, or `--sampler balanced`, help when one class has few training images?

    python -m benchmarks.calibration.class_weight [--shared ../shared/datasets] [--rare 10]
        [--strategies linear-probe,feature-extract] [--only flowers,cifar5] [--key class_weight]

Two imbalanced versions of real photo sets, each with a balanced test split: every class keeps
its training images but one (the first alphabetically), which keeps only `--rare`. For each,
`graft train --strategy S` with `--class-weight none|balanced` and, where batches are drawn (not the
linear probe's logistic fit), `--class-weight none --sampler balanced` (one shared feature cache,
so every setting sees the same features), reading from each run's metrics.json: test accuracy,
balanced accuracy (the mean of the per-class recalls) and the rare class's recall.
- flowers: flowers-dev, 224 px (80 training photos per class after the val split; rare: daisy);
- cifar5: 5 CIFAR-10 classes (airplane, automobile, bird, cat, deer), 100 training images each,
  64 px, 100 test images each (rare: airplane).
Prints a markdown table and stores it under KEY (default "class_weight") in benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from .._results import provenance, record
from .._runs import SHARED_DATASETS, graft_command

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


def run(data: Path, key: str, strategy: str, weight: str, sampler: str, extra: list[str], work: Path) -> dict:
    name = f"{key}-{strategy}-{weight}-{sampler}"
    args = [*graft_command("train", data), "--strategy", strategy, "--class-weight", weight, "--sampler", sampler, "--out", str(work / "runs"), "--name", name, "--cache-dir", str(work / "cache"),
            "--no-report", "--no-audit", *extra]
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    test = json.loads((work / "runs" / name / "metrics.json").read_text())["evaluations"]["test"]
    recalls = [row["recall"] for row in test["per_class"].values()]
    rare = sorted(test["per_class"])[0]
    return {"data": key, "strategy": strategy, "class_weight": weight, "sampler": sampler, "test": round(test["accuracy"], 4),
            "balanced": round(sum(recalls) / len(recalls), 4), "rare_class": rare,
            "rare_recall": round(test["per_class"][rare]["recall"], 4), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED_DATASETS)
    parser.add_argument("--rare", type=int, default=10)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--only", default="flowers,cifar5")
    parser.add_argument("--key", default="class_weight")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="graft-class-weight-"))
    about = provenance(parameters=vars(args))
    sets = {
        "flowers": (imbalanced(args.shared / "flowers-dev", work / "flowers", classes=None, per_class=None,
                               rare=args.rare, test=None), ["--img-size", "224"]),
        "cifar5": (imbalanced(args.shared / "cifar10-dev", work / "cifar5",
                              classes=["airplane", "automobile", "bird", "cat", "deer"], per_class=100,
                              rare=args.rare, test=100), ["--img-size", "64"]),
    }
    rows = []
    for key, (data, extra) in sets.items():
        if key not in args.only.split(","):
            continue
        for strategy in args.strategies.split(","):
            settings = [("none", "shuffle"), ("balanced", "shuffle")]
            if strategy != "linear-probe":  # a logistic fit draws no batches
                settings.append(("none", "balanced"))
            for weight, sampler in settings:
                row = run(data, key, strategy, weight, sampler, extra, work)
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(f"\n{args.rare} training images in the rare class\n"
          "| data | strategy | class weight | sampler | test accuracy | balanced accuracy | rare class recall | time (s) |\n"
          "|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['data']} | {row['strategy']} | {row['class_weight']} | {row['sampler']} | {row['test']:.1%} | "
              f"{row['balanced']:.1%} | {row['rare_recall']:.1%} ({row['rare_class']}) | {row['seconds']} |")
    record(args.key, {"rows": rows, "rare": args.rare}, about)


if __name__ == "__main__":
    main()
