"""Peak memory of the default `graft train DATA` as a user types it, on many images, and the phase that peaks.

DATA is generated from DATA's own images: train/ holds TRAIN images made from DATA/train's (each copy
after the first shifted, mirrored and brightened a little, so that no two files are the same) and
val/ holds VAL made from DATA/test's the same way, in DATA/train's classes. One `graft train DATA
--img-size IMG_SIZE` process runs as typed (auto, its --budget, audit, report, export) into a cold
feature cache. Its peak is the largest sum of the proportional set sizes (PSS) of it and every
process it starts, read every 0.1 s: memory the machine gives the run, a page shared by a forked
loader worker counted once (the sum of their RSS, which counts it in each, and the largest RSS of
any one process, what `/usr/bin/time -v` reports, are recorded too). The phase that peaks is the
last line graft printed before the peak was first reached. Targets (issue 24): at most 1.5 GB on 10,000 + 2,000 images; at most 2 GB
on 100,000 (`--set run_memory.train=100000 --set run_memory.val=20000`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from ._runs import BenchmarkFailed, Context, Parameter, _descendants, _vm_kb, class_folders, graft_command, image_files

PARAMETERS = {
    "train": Parameter(10_000, 120, "training images, made from DATA/train's"),
    "val": Parameter(2_000, 30, "validation images, made from DATA/test's"),
    "img_size": Parameter(224, 32, "--img-size of the run"),
}


def key(values: dict) -> str:
    return f"run_memory_{values['train']}"


def _variant(image, copy: int):
    """Copy number `copy` of a small image: 0 is the image itself; later ones shifted by up to 3 px,
    mirrored every other copy, and a little brighter or darker."""
    from PIL import ImageChops, ImageEnhance, ImageOps

    if copy == 0:
        return image
    shifted = ImageChops.offset(image, copy % 7 - 3, (copy // 7) % 7 - 3)
    mirrored = ImageOps.mirror(shifted) if copy % 2 else shifted
    return ImageEnhance.Brightness(mirrored).enhance(0.85 + 0.3 * ((copy * 37) % 100) / 100)


def generate(source: Path, target: Path, *, split: str, count: int) -> None:
    """target/<class>/NNNNNN.jpg: `count` images in source's classes, made from source's images."""
    from PIL import Image

    classes = class_folders(source)
    files = {folder.name: image_files(folder) for folder in classes}
    for index in range(count):
        name = classes[index % len(classes)].name
        number = index // len(classes)
        original = files[name][number % len(files[name])]
        folder = target / split / name
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(original) as image:
            _variant(image.convert("RGB"), number // len(files[name])).save(folder / f"{number:06d}.jpg", quality=90)


def _pss_kb(pid: int) -> int:
    """The proportional set size of a process in kB (its private pages, plus its share of pages it
    shares with others: a forked loader worker's copy of torch counts once across the processes); 0
    once it has ended."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            return next(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def watch_phases(command: list[str], env: dict[str, str]) -> dict:
    """Run `command` to its end, sampling its process tree every 0.1 s: the sum of their RSS (pages
    shared between processes counted in each), the sum of their PSS (counted once), and the largest
    RSS of any one process (what `/usr/bin/time -v` reports); the line printed last before each new
    peak of the PSS sum; and `phases`: the largest PSS sum while each line was graft's last, for the
    lines under which the run held the most (which step holds what)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env={**os.environ, "COLUMNS": "200", **env}, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip() for line in process.stdout), daemon=True)
    reader.start()
    peak_kb, peak_line, peak_at, rss_sum_kb, process_kb = 0, "", 0.0, 0, 0
    under: dict[int, int] = {}  # index of the last line printed -> the largest PSS sum seen under it
    while process.poll() is None:
        pids = [process.pid, *_descendants(process.pid)]
        rss_sum_kb = max(rss_sum_kb, sum(_vm_kb(pid, "VmRSS") for pid in pids))
        process_kb = max(process_kb, *(_vm_kb(pid, "VmHWM") for pid in pids))
        now_kb = sum(_pss_kb(pid) for pid in pids)
        under[len(lines) - 1] = max(under.get(len(lines) - 1, 0), now_kb)
        if now_kb > peak_kb:
            peak_kb, peak_line, peak_at = now_kb, (lines[-1] if lines else ""), time.perf_counter() - started
        time.sleep(0.1)
    reader.join()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise BenchmarkFailed(f"{' '.join(command)} failed ({process.returncode}):\n" + "\n".join(lines[-40:]))
    return {"seconds": round(seconds, 1), "peak_pss_mb": round(peak_kb / 1024), "peak_at_s": round(peak_at, 1),
            "peak_rss_sum_mb": round(rss_sum_kb / 1024), "peak_process_rss_mb": round(process_kb / 1024),
            "peak_after_line": peak_line, "output": lines,
            "phases": [[lines[index] if index >= 0 else "(before any output)", round(kb / 1024)]
                       for index, kb in sorted(under.items()) if kb >= 0.8 * peak_kb]}


def run(context: Context, *, train: int, val: int, img_size: int) -> dict:
    data = context.work / "data"
    generate(context.data / "train", data, split="train", count=train)
    generate(context.data / "test", data, split="val", count=val)
    context.log(f"generated {train:,} train and {val:,} val images in {data}")
    command = graft_command("train", data, "--img-size", str(img_size), "--out", context.work / "runs",
                            "--name", "memory")
    watched = watch_phases([str(part) for part in command], context.env)
    metrics = json.loads((context.work / "runs" / "memory" / "metrics.json").read_text())
    target = 2048 if train > 50_000 else 1536
    context.log(f"peak {watched['peak_pss_mb']:,} MB (PSS; RSS summed {watched['peak_rss_sum_mb']:,} MB, largest process "
                f"{watched['peak_process_rss_mb']:,} MB) at {watched['peak_at_s']} s of {watched['seconds']} s, "
                f"after: {watched['peak_after_line']}")
    return {"summary": f"peak {watched['peak_pss_mb']:,} MB (PSS of the process tree) for a default run on {train:,} + {val:,} images at "
                       f"{img_size} px ({watched['seconds']:.0f} s; target <= {target:,} MB); peak after "
                       f"{watched['peak_after_line']!r}",
            "train": train, "val": val, "img_size": img_size, "strategy": metrics.get("strategy"),
            "val_accuracy": metrics.get("val_accuracy"), "timings": metrics.get("timings"),
            **{name: watched[name] for name in ("seconds", "peak_pss_mb", "peak_rss_sum_mb", "peak_process_rss_mb",
                                                    "peak_at_s", "peak_after_line", "phases")},
            "output_tail": watched["output"][-15:], "target_mb": target, "met": watched["peak_pss_mb"] <= target,
            "python": sys.version.split()[0]}
