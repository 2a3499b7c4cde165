"""Kill -9 a training run at random moments, resume it, and compare with a run never interrupted.

    python benchmarks/fault_injection.py [--trials 20] [--seed 0] [--data FOLDER]

One uninterrupted `graft train` (finetune: extraction, audit, head phase, image phase, evaluation,
report) is the reference; its duration T sets the range of the kill times. Each trial starts the same
command with its own empty feature cache (so extraction is always part of the run), sends SIGKILL
at a time drawn uniformly from [0, T], then:
- no run folder yet: nothing to resume, the command is run again from the start;
- a run folder: `graft train --resume RUN`; if that is killed too (never here), it would be resumed again.
The trial passes when the resumed run's model.safetensors holds bitwise the same tensors as the
reference's. The phase a kill landed in is read from what the run folder held at that moment.
Prints one line per trial and a summary; writes the summary under "fault_injection" in
benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import store

COMMAND = ["--strategy", "finetune", "--img-size", "48", "--batch-size", "8", "--head-epochs", "5", "--epochs", "5",
           "--views", "2", "--workers", "0", "--precision", "32"]


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
    env = {**os.environ, "GRAFT_CACHE": str(cache)}
    return subprocess.Popen([sys.executable, "-c", "from graft.cli.main import main; main()", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> None:
    _, errors = process.communicate(timeout=900)
    if process.returncode != 0:
        raise SystemExit(f"graft failed (exit {process.returncode}):\n{errors}")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help="training data (default: generated colour squares)")
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="graft-faults-"))
    try:
        data = options.data or make_data(work / "data")
        started = time.perf_counter()
        finish(graft(["train", str(data), *COMMAND, "--out", str(work), "--name", "reference"], cache=work / "c0"))
        duration = time.perf_counter() - started
        print(f"reference run: {duration:.1f} s")
        draw = random.Random(options.seed)
        rows = []
        for trial in range(1, options.trials + 1):
            name, cache = f"trial-{trial}", work / f"cache-{trial}"
            delay = draw.uniform(0.0, duration)
            process = graft(["train", str(data), *COMMAND, "--out", str(work), "--name", name], cache=cache)
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
                finish(graft(["train", str(data), *COMMAND, "--out", str(work), "--name", name], cache=cache))
                how = "run again"
            elif killed:
                finish(graft(["train", "--resume", str(run_dir)], cache=cache))
                how = "resumed"
            else:
                how = "-"
            identical = same(work / "reference" / "model.safetensors", run_dir / "model.safetensors")
            rows.append({"trial": trial, "kill_at_s": round(delay, 2), "phase": phase, "how": how, "identical": identical})
            print(f"trial {trial:2d}: killed at {delay:5.1f} s in {phase}; {how}; "
                  f"{'identical' if identical else 'DIFFERENT'} weights")
        killed_rows = [row for row in rows if row["how"] != "-"]
        summary = {
            "date": time.strftime("%Y-%m-%d"), "trials": len(rows), "killed": len(killed_rows),
            "identical": sum(row["identical"] for row in rows),
            "resumed": sum(row["how"] == "resumed" for row in rows),
            "phases": sorted({row["phase"] for row in killed_rows}), "reference_s": round(duration, 1), "rows": rows,
        }
        print(f"{summary['killed']} runs killed ({summary['resumed']} resumed, the rest before their run folder "
              f"existed), {summary['identical']} of {summary['trials']} with weights identical to the reference")
        store({"fault_injection": summary})
        if summary["identical"] != summary["trials"]:
            raise SystemExit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
