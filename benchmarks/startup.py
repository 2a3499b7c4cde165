"""Start-up time of the `graft` command, as ratios measured in one run (the machine is shared and noisy).

    python benchmarks/startup.py                 # 5 rounds; --data ../shared/datasets/cifar10-dev uses real images

Each command runs in a fresh subprocess, in interleaved rounds (a, b, c, d; the next round starts one
command later, so that none always runs first), after one untimed warm-up round; the median of
the rounds is reported:

(a) baseline 1: `python -c "import torch"`;
(b) `graft --help` (the console script next to this Python): target under 0.5 s;
(c) baseline 2: a bare import of what a cached linear-probe run needs (torch, torchvision, timm,
    safetensors, scikit-learn's logistic regression and metrics, matplotlib's Agg backend, Pillow);
(d) `graft train DATA --strategy linear-probe --img-size 64 --out TMP` as a user types it (report and
    audit on), with every feature already in a private GRAFT_CACHE: target (d)/(c) at most 1.3x.

DATA is 3 classes of 20 images: copied from DATA/train of `--data`, else small generated PNGs (48 px,
classes that overlap, so that the report has mistakes to draw as on real photos), so the script runs
anywhere. One more, untimed, run of (b) and of (d) records which heavy modules each
imported. The results go into benchmarks/results.json under "startup" (its other keys are kept).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import machine, store

HELP_TARGET_S = 0.5
CACHED_RUN_TARGET = 1.3  # (d) / (c)
CLASSES, PER_CLASS = 3, 20
CACHED_IMPORTS = ("torch, torchvision, timm, safetensors.torch, sklearn.linear_model, sklearn.metrics, "
                  "matplotlib.backends.backend_agg, PIL.Image")
HEAVY = ("torch", "torchvision", "timm", "lightning", "sklearn", "matplotlib")

# Runs graft's console-script entry point in this process and writes, at exit, which heavy modules it imported.
IMPORTS_PROBE = """
import atexit, json, sys
def _record(path=sys.argv[1]):
    with open(path, "w") as file:
        json.dump(sorted(name for name in {HEAVY!r} if name in sys.modules), file)
atexit.register(_record)
sys.argv = ["graft", *sys.argv[2:]]
from graft.cli.main import main
sys.exit(main())
"""


def make_data(root: Path, source: Path | None) -> Path:
    """CLASSES class folders of PER_CLASS images: the first of DATA/train's first classes, or generated PNGs."""
    if source is not None:
        for class_dir in sorted(p for p in (source / "train").iterdir() if p.is_dir())[:CLASSES]:
            (root / class_dir.name).mkdir(parents=True)
            for image in sorted(class_dir.iterdir())[:PER_CLASS]:
                shutil.copy2(image, root / class_dir.name / image.name)
        return root
    import numpy as np
    from PIL import Image

    # Each class tints one channel; a random tint per image makes the classes overlap, so that (as on
    # real photos) the model makes mistakes and the report draws them with their activation maps.
    rng = np.random.default_rng(0)
    for index in range(CLASSES):
        (root / f"class{index}").mkdir(parents=True)
        colour = 110 + 30 * np.eye(3)[index]
        for number in range(PER_CLASS):
            tint = rng.normal(0, 30, 3)
            pixels = np.clip(colour + tint + rng.normal(0, 25, (48, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{index}" / f"{number:02d}.png")
    return root


def run(command: list[str], env: dict[str, str]) -> float:
    """Seconds the command took; its output is shown only when it fails."""
    start = time.perf_counter()
    result = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {shlex.join(command)}\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return seconds


def imported(arguments: list[str], env: dict[str, str], tmp: Path) -> list[str]:
    """The heavy modules `graft ARGUMENTS` imports, from one untimed run."""
    path = tmp / "imported.json"
    run([sys.executable, "-c", IMPORTS_PROBE.format(HEAVY=HEAVY), str(path), *arguments], env)
    return json.loads(path.read_text())


def commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=Path(__file__).parent).stdout.strip()
        return head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5); the median is reported")
    parser.add_argument("--data", type=Path, help="copy images from DATA/train (e.g. ../shared/datasets/cifar10-dev) "
                                                  "instead of generating them")
    parser.add_argument("--graft", help="the graft command (default: the one next to this Python)")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results.json"))
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    graft = args.graft or str(Path(sys.executable).with_name("graft"))
    if not Path(graft).exists():
        graft = shutil.which("graft") or sys.exit("no graft command: install graft (pip install -e .) or pass --graft")

    with tempfile.TemporaryDirectory(prefix="graft-startup-") as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "GRAFT_CACHE": str(tmp / "cache")}  # a private cache, filled below
        data = make_data(tmp / "data", args.data)
        train = ["train", str(data), "--strategy", "linear-probe", "--img-size", "64", "--out", str(tmp / "runs")]
        commands = {
            "a": ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
            "b": ("graft --help", [graft, "--help"]),
            "c": (f"python -c 'import {CACHED_IMPORTS}'", [sys.executable, "-c", f"import {CACHED_IMPORTS}"]),
            "d": ("graft train DATA --strategy linear-probe --img-size 64 --out TMP (cached)", [graft, *train]),
        }
        fill_s = run([graft, *train, "--name", "warm"], env)  # extracts and stores the features, fit, audit
        seconds: dict[str, list[float]] = {key: [] for key in commands}
        for round_ in range(args.rounds + 1):  # round 0 warms the file caches and is not counted
            keys = list(commands)
            keys = keys[round_ % len(keys):] + keys[:round_ % len(keys)]
            for key in keys:
                took = run(commands[key][1], env)
                if round_:
                    seconds[key].append(took)
        last_run = max((tmp / "runs").iterdir(), key=lambda folder: folder.stat().st_mtime)
        run_metrics = json.loads((last_run / "metrics.json").read_text())
        run_timings = run_metrics["timings"]
        imports = {"graft --help": imported(["--help"], env, tmp),
                   "graft train (cached linear-probe)": imported([*train, "--name", "probe"], env, tmp)}

    median = {key: statistics.median(values) for key, values in seconds.items()}
    help_ratio = statistics.median(b / a for a, b in zip(seconds["a"], seconds["b"]))
    run_ratio = statistics.median(d / c for c, d in zip(seconds["c"], seconds["d"]))
    info = machine()
    results = {
        "date": datetime.date.today().isoformat(),
        "commit": commit(),
        "machine": info,
        "rounds": args.rounds,
        "data": f"{CLASSES} classes x {PER_CLASS} images " + (f"from {args.data}/train" if args.data else "(generated PNGs)"),
        "commands": {key: text for key, (text, _) in commands.items()},
        "seconds": seconds,
        "median_s": median,
        "help_s": median["b"],
        "help_target_s": HELP_TARGET_S,
        "help_met": median["b"] < HELP_TARGET_S,
        "help_over_import_torch": help_ratio,
        "cached_run_over_imports": run_ratio,
        "cached_run_target": CACHED_RUN_TARGET,
        "cached_run_met": run_ratio <= CACHED_RUN_TARGET,
        "ratios_of_medians": {"b/a": median["b"] / median["a"], "d/c": median["d"] / median["c"]},
        "cache_fill_s": fill_s,
        "cached_run_timings": run_timings,  # graft's own timings of the last timed (d) run (metrics.json)
        "cached_run_val_accuracy": run_metrics.get("val_accuracy"),  # below 1: the report draws its mistakes
        "heavy_modules_imported": imports,
    }
    print(f"Start-up, median of {args.rounds} interleaved rounds: {info['cpu']}, {info['cores']} cores, "
          f"avx512_bf16 {'yes' if info['avx512_bf16'] else 'no'}, AMX {'yes' if info['amx'] else 'no'}")
    notes = {"b": f" (target under {HELP_TARGET_S} s: {verdict(results['help_met'])})",
             "d": f" (graft's own total_s {run_timings.get('total_s', 0):.2f} s, then report_s "
                  f"{run_timings.get('report_s', 0):.2f} s)"}
    for key, (text, _) in commands.items():
        print(f"  ({key}) {text}: {median[key]:.2f} s{notes.get(key, '')}")
    print(f"  (b)/(a) graft --help / import torch: {help_ratio:.2f}x")
    print(f"  (d)/(c) cached linear-probe run / bare imports: {run_ratio:.2f}x "
          f"(target at most {CACHED_RUN_TARGET}x: {verdict(results['cached_run_met'])})")
    for label, modules in imports.items():
        print(f"  {label} imported: {', '.join(modules) or 'none of ' + ', '.join(HEAVY)}")

    store({"startup": results}, args.json)
    print(f"written {args.json} (\"startup\")")


if __name__ == "__main__":
    main()
