"""Start-up: `graft --help` against `import torch`; a cached linear-probe run against its bare imports.

Each command runs in a fresh process, after one untimed round that warms the file caches; ROUNDS
interleaved rounds, the median round's ratio reported:

(a) baseline: `python -c "import torch"`;
(b) `python -m graft --help` (what the `graft` script runs): target under 0.5 s;
(c) baseline: a bare import of what a cached linear-probe run needs (torch, torchvision, timm,
    safetensors, scikit-learn's logistic regression and metrics, matplotlib's Agg backend, Pillow);
(d) `python -m graft train DATA --strategy linear-probe --img-size IMG_SIZE --out TMP` as a user types
    it (report and audit on), with everything already in a private GRAFT_CACHE: target (d)/(c) at most
    1.3x (issue 24 asked for at most 2x on its 398 photos: 300 of flowers-dev's with `--set
    startup.per_class=100 --set startup.img_size=224 --data ../shared/datasets/flowers-dev`).
DATA: 3 classes of PER_CLASS images copied from DATA/train. One more run of (b) and of (d) records which
heavy modules each imported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from ._runs import BenchmarkFailed, Context, Parameter, class_folders, graft_command, image_files, interleaved, timed

PARAMETERS = {
    "rounds": Parameter(5, 1, "timed rounds"),
    "per_class": Parameter(20, 20, "images per class in DATA (3 classes), copied from DATA/train"),
    "img_size": Parameter(64, 64, "--img-size of the cached run"),
}
HELP_TARGET_S = 0.5
CACHED_RUN_TARGET = 1.3  # (d) / (c)
CLASSES = 3
CACHED_IMPORTS = ("torch, torchvision, timm, safetensors.torch, sklearn.linear_model, sklearn.metrics, "
                  "matplotlib.backends.backend_agg, PIL.Image")
HEAVY = ("torch", "torchvision", "timm", "lightning", "sklearn", "matplotlib")
# Runs `python -m graft ARGS` in this process and writes, at exit, which heavy modules it imported.
IMPORTS_PROBE = """
import atexit, json, runpy, sys
def _record(path=sys.argv[1]):
    with open(path, "w") as file:
        json.dump(sorted(name for name in {HEAVY!r} if name in sys.modules), file)
atexit.register(_record)
sys.argv = ["graft", *sys.argv[2:]]
runpy.run_module("graft", run_name="__main__", alter_sys=True)
"""


def key(values: dict) -> str:
    """Where the figures are kept: "startup" at the default size, else a key naming the data's size."""
    default = {name: parameter.full for name, parameter in PARAMETERS.items()}
    same = all(values[name] == default[name] for name in ("per_class", "img_size"))
    return "startup" if same else f"startup_{values['per_class']}_per_class_{values['img_size']}px"


def copy_data(source: Path, target: Path, per_class: int) -> Path:
    for class_dir in class_folders(source / "train")[:CLASSES]:
        (target / class_dir.name).mkdir(parents=True)
        for image in image_files(class_dir)[:per_class]:
            shutil.copy2(image, target / class_dir.name / image.name)
    return target


def seconds(command: list[str], env: dict[str, str]) -> float:
    """Seconds the command took; its output is shown only when it fails."""
    result, took = timed(lambda: subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True))
    if result.returncode != 0:
        raise BenchmarkFailed(f"failed ({result.returncode}): {' '.join(command)}\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return took


def run(context: Context, *, rounds: int, per_class: int, img_size: int) -> dict:
    import os

    env = {**os.environ, **context.env, "COLUMNS": "200"}  # a private cache, filled below
    data = copy_data(context.data, context.work / "data", per_class)
    train = ["train", str(data), "--strategy", "linear-probe", "--img-size", str(img_size), "--out",
             str(context.work / "runs")]
    commands = {
        "a": [sys.executable, "-c", "import torch"],
        "b": graft_command("--help"),
        "c": [sys.executable, "-c", f"import {CACHED_IMPORTS}"],
        "d": graft_command(*train),
    }
    fill_s = seconds(graft_command(*train, "--name", "warm"), env)  # extracts and stores the features, fit, audit
    for command in commands.values():  # warms the file caches
        seconds(command, env)
    pairs = interleaved(rounds, {"help": (lambda: seconds(commands["a"], env), lambda: seconds(commands["b"], env)),
                                 "cached_run": (lambda: seconds(commands["c"], env), lambda: seconds(commands["d"], env))},
                        log=context.log)
    last_run = max((context.work / "runs").iterdir(), key=lambda folder: folder.stat().st_mtime)
    run_metrics = json.loads((last_run / "metrics.json").read_text())
    imported = {}
    for label, arguments in (("graft --help", ["--help"]), ("graft train (cached linear-probe)", [*train, "--name", "probe"])):
        path = context.work / "imported.json"
        seconds([sys.executable, "-c", IMPORTS_PROBE.format(HEAVY=HEAVY), str(path), *arguments], env)
        imported[label] = json.loads(path.read_text())
    help_pair, run_pair = pairs["help"], pairs["cached_run"]
    help_s = help_pair.summary()["measured_median"]
    return {
        "summary": f"graft --help {help_s:.2f} s (target < {HELP_TARGET_S} s), {help_pair.ratio:.2f}x import torch; "
                   f"cached linear-probe run {run_pair.ratio:.2f}x its bare imports (target <= {CACHED_RUN_TARGET}x)",
        "commands": {"a": "python -c 'import torch'", "b": "python -m graft --help",
                     "c": f"python -c 'import {CACHED_IMPORTS}'",
                     "d": f"python -m graft train DATA --strategy linear-probe --img-size {img_size} --out TMP (cached)"},
        "data": f"{CLASSES} classes x {per_class} images from DATA/train",
        "help": {**help_pair.summary(), "met": help_s < HELP_TARGET_S, "target_s": HELP_TARGET_S},
        "cached_run": {**run_pair.summary(), "met": run_pair.ratio <= CACHED_RUN_TARGET, "target": CACHED_RUN_TARGET},
        "cache_fill_s": round(fill_s, 2), "cached_run_timings": run_metrics["timings"],
        "cached_run_val_accuracy": run_metrics.get("val_accuracy"), "heavy_modules_imported": imported,
    }
