"""A small real model for the benchmarks that need one: a Lite0 linear probe on 20 images per class."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXTENSIONS = {".jpg", ".jpeg", ".png"}


def link_small(data: Path, work: Path, per_class: int = 20) -> Path:
    """WORK/small: links to the first `per_class` images of each class of DATA/train (made once)."""
    small = work / "small"
    if not small.exists():
        for folder in sorted((data / "train").iterdir()):
            if folder.is_dir():
                (small / folder.name).mkdir(parents=True)
                for image in sorted(folder.iterdir())[:per_class]:
                    (small / folder.name / image.name).symlink_to(image.resolve())
    return small


def train_small(data: Path, work: Path, env: dict, *, strategy: str = "linear-probe", name: str = "model",
                extra: list[str] | None = None) -> Path:
    """Train `strategy` on link_small's images as `graft train` would, quietly; return the run."""
    subprocess.run([sys.executable, "-c", "from graft.cli.main import main; main()", "train", str(link_small(data, work)),
                    "--strategy", strategy, "--no-report", "--no-audit", "--out", str(work), "--name", name,
                    *(extra or [])], env=env, check=True, capture_output=True)
    return work / name


def train_small_probe(data: Path, work: Path, env: dict, extra: list[str] | None = None) -> Path:
    """A linear probe on 20 images per class of DATA/train (link_small), as WORK/model."""
    return train_small(data, work, env, extra=extra)


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


def repeated_files(data: Path, count: int) -> list[Path]:
    """`count` image paths: every image under DATA in sorted order, repeated as often as needed."""
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in EXTENSIONS)
    return [files[index % len(files)] for index in range(count)]
