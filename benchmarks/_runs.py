"""A small real model for the benchmarks that need one: a Lite0 linear probe on 20 images per class."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def train_small_probe(data: Path, work: Path, env: dict, extra: list[str] | None = None) -> Path:
    """Link 20 images per class of DATA/train into WORK/small, train a linear probe on them, return the run."""
    small = work / "small"
    for folder in sorted((data / "train").iterdir()):
        if folder.is_dir():
            (small / folder.name).mkdir(parents=True)
            for image in sorted(folder.iterdir())[:20]:
                (small / folder.name / image.name).symlink_to(image.resolve())
    subprocess.run([sys.executable, "-c", "from graft.cli.main import main; main()", "train", str(small),
                    "--strategy", "linear-probe", "--no-report", "--no-audit", "--out", str(work), "--name", "model",
                    *(extra or [])], env=env, check=True, capture_output=True)
    return work / "model"


def small_probe_export(data: Path, prefix: str) -> tuple[Path, Path]:
    """A fresh work folder (its own GRAFT_CACHE) holding train_small_probe's run of DATA and its
    `graft export` as WORK/model.onnx: (work, model.onnx)."""
    import os
    import tempfile

    import graft

    work = Path(tempfile.mkdtemp(prefix=prefix))
    run_dir = train_small_probe(data, work, {**os.environ, "GRAFT_CACHE": str(work / "cache")})
    graft.load(run_dir).export(work / "model.onnx", log=None)
    return work, work / "model.onnx"
