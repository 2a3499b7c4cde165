"""Peak memory of the fits a run makes on its cached features: the linear probe and the score of unknown images.

Each step runs in a fresh child process on ROWS generated training features (ROWS x DIM float16 in a
memory map, as graft's feature cache holds them; CLASSES Gaussian clusters) and VAL_ROWS val rows:
- probe: graft.heads.logistic.fit_rows, the fit a linear-probe run makes (the features copied once,
  standardised in place; C cross-validated in float64 on at most CV_ROWS rows, then fitted on all,
  in float32 where there are more);
- unknown: graft.unknown.fit_unknown's default score (knn: one float32 copy of the training rows,
  centred and scaled a block at a time).
The figure is the child's peak RSS (VmHWM) less its RSS once the features exist (the imports and
the memory map's pages read so far), and the peak itself: what the step adds to a run. Issue 24
asked a default run on 100,000 images to stay under 2 GB; these are its two largest fits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ._runs import Context, Parameter

PARAMETERS = {
    "rows": Parameter(100_000, 4_000, "training feature rows"),
    "val_rows": Parameter(20_000, 800, "val feature rows (the score's threshold)"),
    "dim": Parameter(1280, 1280, "features per row (Lite0's 1,280)"),
    "classes": Parameter(10, 10, "classes"),
}

CHILD = """
import json, resource, sys
import numpy as np
step, folder, rows, val_rows, dim, classes = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])

def rss_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024

rng = np.random.default_rng(0)
centres = rng.normal(size=(classes, dim)).astype(np.float32)
labels = rng.integers(0, classes, size=rows)
train = np.lib.format.open_memmap(f"{folder}/train.npy", mode="w+", dtype=np.float16, shape=(rows, dim))
for start in range(0, rows, 4096):
    block = labels[start:start + 4096]
    train[start:start + len(block)] = centres[block] + rng.normal(size=(len(block), dim)).astype(np.float32)
train.flush()
val_labels = rng.integers(0, classes, size=val_rows)
val = (centres[val_labels] + rng.normal(size=(val_rows, dim)).astype(np.float32)).astype(np.float16)
del train
train = np.load(f"{folder}/train.npy", mmap_mode="r")
from graft.heads import logistic
from graft.unknown import fit_unknown
import graft.memory
graft.memory.give_back()
before = rss_mb("VmRSS")
if step == "probe":
    logistic.fit_rows(train, labels, C=None, seed=0)
else:
    fit_unknown(train, labels, val)
print(json.dumps({"before_mb": before, "peak_mb": rss_mb("VmHWM")}))
"""


def fit_step(context: Context, step: str, rows: int, val_rows: int, dim: int, classes: int) -> dict:
    import time

    folder = context.work / step
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, step, str(folder), str(rows), str(val_rows), str(dim),
                           str(classes)], capture_output=True, text=True, env={**os.environ, **context.env}, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {step} step failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {"peak_mb": round(figures["peak_mb"]), "added_mb": round(figures["peak_mb"] - figures["before_mb"]),
            "seconds": round(time.perf_counter() - started, 1)}


def run(context: Context, *, rows: int, val_rows: int, dim: int, classes: int) -> dict:
    from graft.heads.logistic import CV_ROWS

    steps = {}
    for step in ("unknown", "probe"):
        steps[step] = fit_step(context, step, rows, val_rows, dim, classes)
        context.log(f"{step} on {rows:,} rows: {steps[step]}")
    features_mb = rows * dim * 2 / 2**20
    return {"summary": (f"{rows:,} x {dim} features ({features_mb:,.0f} MB as float16): the probe's fit peaks at "
                        f"{steps['probe']['peak_mb']:,} MB (+{steps['probe']['added_mb']:,}), the unknown score's at "
                        f"{steps['unknown']['peak_mb']:,} MB (+{steps['unknown']['added_mb']:,})"),
            "rows": rows, "cv_rows": CV_ROWS, "features_mb": round(features_mb), **steps}
