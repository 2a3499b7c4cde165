"""How the benchmarks run things: the graft command as a user types it, rounds interleaved with their
baseline, peak memory of a process tree, the data they read, and a small real model.

This VM's speed drifts by tens of percent within minutes, so a figure is a ratio measured in one run:
the baseline and the measured thing alternate round by round (`interleaved`), each round's ratio
compares neighbours, and the median round is reported.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXTENSIONS = {".jpg", ".jpeg", ".png"}
BACKBONE = "tf_efficientnet_lite0"
SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"  # ../shared/datasets from the repository


class BenchmarkFailed(Exception):
    """A benchmark could not measure what it measures (a command failed, the data does not fit)."""


@dataclass(frozen=True)
class Parameter:
    """One setting of a benchmark: its value in the full suite, in `--quick`, and what it means."""

    full: Any
    quick: Any
    help: str


@dataclass
class Context:
    """What every benchmark gets: the data (train/ and test/ class folders), a work folder of its own,
    the environment for child processes (a private GRAFT_CACHE in the work folder), and the suite's
    shared work folder (for the small model, trained once per suite run)."""

    data: Path
    work: Path
    shared: Path
    quick: bool
    env: dict[str, str] = field(default_factory=dict)

    def log(self, message: str) -> None:
        print(f"  {message}", flush=True)


# ---------------------------------------------------------------------------------------------------
# The graft command


def graft_command(*args: str | Path) -> list[str]:
    """`python -m graft ARGS` with this interpreter: the command a user types, without relying on PATH."""
    return [sys.executable, "-m", "graft", *map(str, args)]


def run_graft(*args: str | Path, env: dict[str, str] | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run `graft ARGS` to its end, its output captured; a failure raises BenchmarkFailed with the tail."""
    command = graft_command(*args)
    result = subprocess.run(command, env={**os.environ, "COLUMNS": "200", **(env or {})}, capture_output=True,
                            text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise BenchmarkFailed(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-2000:]}"
                              f"{result.stderr[-3000:]}")
    return result


def start_graft(*args: str | Path, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen:
    """Start `graft ARGS` and return the process (stdin closed; other streams as `popen` says)."""
    return subprocess.Popen(graft_command(*args), env={**os.environ, "COLUMNS": "200", **(env or {})},
                            stdin=subprocess.DEVNULL, **popen)


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """os.environ with `env` over it, for graft code that runs in this process (GRAFT_CACHE), then as it was."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# ---------------------------------------------------------------------------------------------------
# Timing


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    """(what `function` returned, the seconds it took)."""
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


@dataclass
class Pair:
    """A measured thing and its baseline, one value of each per round (and anything else each call returned)."""

    baseline: list[float] = field(default_factory=list)
    measured: list[float] = field(default_factory=list)
    extras: list[dict] = field(default_factory=list)  # what each measured call returned beside its number
    baseline_extras: list[dict] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        """measured / baseline, round by round."""
        return [m / b for m, b in zip(self.measured, self.baseline)]

    @property
    def ratio(self) -> float:
        """The median of the rounds' ratios (neighbours compared, then the middle round)."""
        return statistics.median(self.ratios)

    def summary(self, digits: int = 3) -> dict:
        return {"baseline": [round(v, digits) for v in self.baseline], "measured": [round(v, digits) for v in self.measured],
                "baseline_median": round(statistics.median(self.baseline), digits),
                "measured_median": round(statistics.median(self.measured), digits),
                "ratios": [round(r, digits) for r in self.ratios], "ratio": round(self.ratio, digits)}


def _value(result: Any) -> tuple[float, dict]:
    return (float(result[0]), dict(result[1])) if isinstance(result, tuple) else (float(result), {})


def interleaved(rounds: int, pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]], *, bracket: bool = False,
                log: Callable[[str], None] | None = None) -> dict[str, Pair]:
    """Measure each (baseline, measured) pair `rounds` times, interleaved.

    Each call returns a number (a rate or seconds) or (number, extras). The pairs take turns, the
    next round starting one pair later, and within a pair the baseline goes first in even rounds and
    last in odd ones, so that neither always runs first. With `bracket`, the baseline runs just
    before and just after the measured call instead, and their mean is the round's baseline.
    """
    results = {name: Pair() for name in pairs}
    names = list(pairs)
    for round_ in range(rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            baseline, measured = pairs[name]
            if bracket:
                before, base_extras = _value(baseline())
                value, extras = _value(measured())
                after, _ = _value(baseline())
                base = (before + after) / 2
            elif round_ % 2 == 0:
                base, base_extras = _value(baseline())
                value, extras = _value(measured())
            else:
                value, extras = _value(measured())
                base, base_extras = _value(baseline())
            pair = results[name]
            pair.baseline.append(base)
            pair.measured.append(value)
            pair.extras.append(extras)
            pair.baseline_extras.append(base_extras)
            if log:
                log(f"round {round_ + 1} {name}: baseline {base:.3g}, measured {value:.3g} ({value / base:.3f})")
    return results


def rate_for(seconds: float, function: Callable[[], int]) -> float:
    """Items per second of `function` (which returns how many items one call did), called for `seconds`."""
    done, started = 0, time.perf_counter()
    while True:
        done += function()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed


# ---------------------------------------------------------------------------------------------------
# Memory


def _vm_kb(pid: int, field_name: str) -> int:
    """VmHWM (the peak) or VmRSS (now) of a process, in kB; 0 once it has ended."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field_name))
    except (OSError, StopIteration):
        return 0


def _descendants(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            children = [int(child) for child in handle.read().split()]
    except OSError:
        return []
    return children + [grandchild for child in children for grandchild in _descendants(child)]


@dataclass
class Watched:
    seconds: float
    peak_rss_mb: float
    stdout: str


def watch(command: list[str], env: dict[str, str] | None = None) -> Watched:
    """Run `command` to its end: its seconds, and the peak memory of it and every child process it
    starts: the largest RSS of them together, read every 0.1 s, and never less than the peak RSS
    (VmHWM) any one of them reached. A failure raises BenchmarkFailed."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env={**os.environ, "COLUMNS": "200", **(env or {})}, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_kb = 0
    while process.poll() is None:
        pids = [process.pid, *_descendants(process.pid)]
        peak_kb = max(peak_kb, sum(_vm_kb(pid, "VmRSS") for pid in pids), *(_vm_kb(pid, "VmHWM") for pid in pids))
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise BenchmarkFailed(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-3000:]}")
    return Watched(seconds, peak_kb / 1024, stdout)


# ---------------------------------------------------------------------------------------------------
# Data


def image_files(folder: Path) -> list[Path]:
    """Every image file under `folder`, sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS)


def class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def class_subset(source: Path, target: Path, *, train_per_class: int, val_per_class: int) -> Path:
    """target/train and target/val: links to the first images of each class of source/train and
    source/test (made once)."""
    if not target.exists():
        for split, origin, count in (("train", "train", train_per_class), ("val", "test", val_per_class)):
            for class_dir in class_folders(source / origin):
                (target / split / class_dir.name).mkdir(parents=True)
                for image in image_files(class_dir)[:count]:
                    (target / split / class_dir.name / image.name).symlink_to(image.resolve())
    return target


def train_subset(source: Path, target: Path, *, train_per_class: int) -> Path:
    """target/train with links to the first `train_per_class` images of each class of source/train,
    and target/test linking all of source/test: fewer training images, the same test."""
    for split, count in (("train", train_per_class), ("test", None)):
        for class_dir in class_folders(source / split):
            (target / split / class_dir.name).mkdir(parents=True, exist_ok=True)
            for image in image_files(class_dir)[:count]:
                (target / split / class_dir.name / image.name).symlink_to(image.resolve())
    return target


def linked_files(files: list[Path], folder: Path, count: int) -> Path:
    """`folder` holding `count` links to `files`, repeated in order as often as needed."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        source = files[index % len(files)]
        (folder / f"{index:06d}{source.suffix.lower()}").symlink_to(source.resolve())
    return folder


def generated_data(root: Path, *, classes: int = 3, train: int = 40, test: int = 12, size: int = 64) -> Path:
    """root/train and root/test with `classes` classes of generated JPEG photos (a tint per class,
    noise and a random tint per image, so that the classes overlap a little, as real ones do)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for index in range(classes):
            folder = root / split / f"class{index}"
            folder.mkdir(parents=True, exist_ok=True)
            colour = 110 + 40 * np.eye(3)[index % 3] + 10 * (index // 3)
            for number in range(count):
                pixels = colour + rng.normal(0, 25, 3) + rng.normal(0, 25, (size, size + size // 3, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{number:03d}.jpg", quality=90)
    return root


def enlarged(sources: list[Path], folder: Path, side: int) -> list[Path]:
    """Copies of `sources` enlarged to `side` px on their short side, as JPEG (quality 90), like a
    camera's photos: folder/<class>/<name>.jpg."""
    from PIL import Image

    paths = []
    for source in sources:
        image = Image.open(source).convert("RGB")
        scale = side / min(image.size)
        target = folder / source.parent.name / f"{source.stem}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC).save(
            target, quality=90)
        paths.append(target)
    return paths


# ---------------------------------------------------------------------------------------------------
# A small real model


def small_model(context: Context, *, strategy: str = "linear-probe", img_size: int = 0, per_class: int = 20,
                epochs: int = 1) -> tuple[Path, dict[str, str]]:
    """A real Lite0 model: `graft train --strategy STRATEGY` (no report or audit; `epochs` image epochs
    where the strategy has them) on the first `per_class` images of each class of DATA/train at
    `img_size` px (0: the backbone's own), trained once per suite run, and the environment it was
    trained in: its GRAFT_CACHE, empty before, holds the export kept at the end of training.
    Returns (run folder, env)."""
    work = context.shared / f"{strategy}-{per_class}-{img_size}-{epochs}"
    env = {"GRAFT_CACHE": str(work / "cache")}
    run_dir = work / "model"
    if not (run_dir / "graft.json").exists():
        shutil.rmtree(work, ignore_errors=True)  # what a failed attempt left
        images = work / "images"
        for folder in class_folders(context.data / "train"):
            (images / folder.name).mkdir(parents=True, exist_ok=True)
            for image in image_files(folder)[:per_class]:
                (images / folder.name / image.name).symlink_to(image.resolve())
        size = ["--img-size", str(img_size)] if img_size else []
        tuned = ["--epochs", str(epochs)] if strategy != "linear-probe" else []
        run_graft("train", images, "--strategy", strategy, "--no-report", "--no-audit", "--out", work,
                  "--name", "model", *size, *tuned, env=env)
    return run_dir, env


# ---------------------------------------------------------------------------------------------------
# Bare forward passes: what graft's own commands are measured against


def onnx_bare_rate(model_file: Path, *, seconds: float, batch: int = 64) -> float:
    """Images/s of an exported model alone in ONNX Runtime, as `graft predict model.onnx` runs it,
    on random uint8 batches already in memory."""
    import numpy as np

    from graft.export.exported import ExportedModel

    exported = ExportedModel(model_file)
    size = getattr(exported, "input_size", None) or exported.data_config.input_size  # the attribute, then the predictor's
    pixels = np.random.default_rng(0).integers(0, 256, (batch, *size), dtype=np.uint8)
    exported.probabilities(pixels)  # warm-up

    def one() -> int:
        exported.probabilities(pixels)
        return batch

    return rate_for(seconds, one)


def frozen_pass(module, *, runtime, input_size: tuple[int, ...], folder: Path | None = None):
    """graft.engines.frozen_forward for `module` as graft runs a long pass (a context manager)."""
    import inspect

    from graft.engines import frozen_forward

    options: dict[str, Any] = {"runtime": runtime, "input_size": input_size}
    if folder is not None:
        options["folder"] = folder
    if "images" in inspect.signature(frozen_forward).parameters:  # where the engine still depends on it
        options["images"] = 10**6
    return frozen_forward(module, **options)


def torch_bare_rate(forward, pixels, *, seconds: float) -> float:
    """Images/s of a graft.engines forward pass alone on `pixels` (a uint8 batch in memory)."""
    forward(pixels)  # warm-up

    def one() -> int:
        forward(pixels)
        return len(pixels)

    return rate_for(seconds, one)
