"""Kill -9 a training run at random moments, resume it, and compare with a run never interrupted.

One uninterrupted `graft train` (finetune on generated colour squares: extraction, audit, head
phase, image phase, evaluation, report) is the reference; its duration T sets the range of the
kill times. Each of TRIALS trials starts the same command with its own empty feature cache (so
extraction is always part of the run), sends SIGKILL at a time drawn uniformly from [0, T] (seeded
by SEED), then:
- no run folder yet: nothing to resume, the command is run again from the start;
- a run folder: `graft train --resume RUN`.
A trial passes when the resumed run's model.safetensors holds bitwise the same tensors as the
reference's. The phase a kill landed in is read from what the run folder held at that moment.
The check passes when every trial does (docs/reliability.md).
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ._runs import BenchmarkFailed, Context, Parameter, start_graft

PARAMETERS = {
    "trials": Parameter(20, 1, "runs killed at a random moment"),
    "seed": Parameter(0, 0, "seed of the kill times"),
    "epochs": Parameter(5, 2, "head epochs and image epochs of the run"),
}


def command(epochs: int) -> list[str]:
    return ["--strategy", "finetune", "--img-size", "48", "--batch-size", "8", "--head-epochs", str(epochs),
            "--epochs", str(epochs), "--views", "2", "--workers", "0", "--precision", "32"]


def make_data(folder: Path) -> Path:
    """3 colour classes of 24 noisy 48 px PNGs (train/ and val/): enough for every phase to take a moment."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}
    for split, count in (("train", 18), ("val", 6)):
        for name, colour in colours.items():
            (folder / split / name).mkdir(parents=True, exist_ok=True)
            for index in range(count):
                pixels = np.clip(np.array(colour, dtype=np.float32) + rng.normal(0, 40, (48, 48, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / split / name / f"{index:03d}.png")
    return folder


def graft(args: list[str], *, cache: Path) -> subprocess.Popen:
    return start_graft(*args, env={"GRAFT_CACHE": str(cache)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True)


def finish(process: subprocess.Popen) -> None:
    _, errors = process.communicate(timeout=900)
    if process.returncode != 0:
        raise BenchmarkFailed(f"graft failed (exit {process.returncode}):\n{errors}")


def phase_of(run_dir: Path) -> str:
    """Where the run was when it was killed, from the files it had written."""
    checkpoints = run_dir / "checkpoints"
    if not run_dir.exists():
        return "set-up (no run folder yet)"
    if (run_dir / "model.safetensors").exists():
        return "report (model saved)"
    if (checkpoints / "images-resume.pt").exists():
        return "image phase (an epoch saved) or evaluation"
    if (checkpoints / "images-history.json").exists() or (checkpoints / "images-best.safetensors").exists():
        return "image phase (first epoch)"
    if (checkpoints / "head-history.json").exists():
        return "head phase"
    return "extraction or audit"


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def same(a: Path, b: Path) -> bool:
    import torch

    ta, tb = tensors(a), tensors(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def run(context: Context, *, trials: int, seed: int, epochs: int) -> dict:
    work = context.work
    data = make_data(work / "data")
    arguments = command(epochs)
    started = time.perf_counter()
    finish(graft(["train", str(data), *arguments, "--out", str(work), "--name", "reference"], cache=work / "c0"))
    duration = time.perf_counter() - started
    context.log(f"reference run: {duration:.1f} s")
    draw = random.Random(seed)
    rows = []
    for trial in range(1, trials + 1):
        name, cache = f"trial-{trial}", work / f"cache-{trial}"
        delay = draw.uniform(0.0, duration)
        process = graft(["train", str(data), *arguments, "--out", str(work), "--name", name], cache=cache)
        try:
            process.wait(timeout=delay)
            killed = False
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed = True
        run_dir = work / name
        killed = killed and not (run_dir / "metrics.json").exists()  # metrics.json is written last
        phase = phase_of(run_dir) if killed else "finished before the kill"
        if killed and not (run_dir / "run.json").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
            finish(graft(["train", str(data), *arguments, "--out", str(work), "--name", name], cache=cache))
            how = "run again"
        elif killed:
            finish(graft(["train", "--resume", str(run_dir)], cache=cache))
            how = "resumed"
        else:
            how = "-"
        identical = same(work / "reference" / "model.safetensors", run_dir / "model.safetensors")
        rows.append({"trial": trial, "kill_at_s": round(delay, 2), "phase": phase, "how": how, "identical": identical})
        context.log(f"trial {trial:2d}: killed at {delay:5.1f} s in {phase}; {how}; "
                    f"{'identical' if identical else 'DIFFERENT'} weights")
    killed_rows = [row for row in rows if row["how"] != "-"]
    figures = {
        "trials": len(rows), "killed": len(killed_rows), "identical": sum(row["identical"] for row in rows),
        "resumed": sum(row["how"] == "resumed" for row in rows),
        "phases": sorted({row["phase"] for row in killed_rows}), "reference_s": round(duration, 1), "rows": rows,
    }
    figures["summary"] = (f"{figures['identical']} of {figures['trials']} runs ended with the reference's weights "
                          f"({figures['killed']} killed, {figures['resumed']} resumed)")
    figures["passed"] = figures["identical"] == figures["trials"]
    return figures
