"""benchmarks/results.json: every figure stored beside the machine, versions and commit that measured it.

Each key of the file is one benchmark's result:

    {"figures": {...what it measured...},
     "machine": {"cpu": ..., "flags": {"avx2": ..., "avx512_bf16": ..., "amx": ...}, "cores": ..., "ram_gb": ...},
     "versions": {"torch": ..., "onnxruntime": ..., "graft": ...},
     "commit": "abc1234" (+ " dirty" when the working tree had changes), "date": "YYYY-MM-DD",
     "command": "python -m benchmarks --only NAME ...", "parameters": {...}}

`record` is the one way to write a figure; the file's other keys are kept. Keys measured before the
suite existed carry the same fields, taken from docs/benchmarks.md and git log, with "unknown" where
neither says, and `"measured_before_the_suite": true`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from graft.io import write_json_atomic

RESULTS = Path(__file__).with_name("results.json")
ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "torchvision", "timm", "lightning", "onnxruntime", "openvino", "numpy", "graft")
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def _cpuinfo() -> tuple[str, set[str]]:
    path = Path("/proc/cpuinfo")
    lines = path.read_text().splitlines() if path.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    return model, flags


def _ram_gb() -> float | None:
    path = Path("/proc/meminfo")
    if not path.exists():
        return None
    total_kb = next((int(line.split()[1]) for line in path.read_text().splitlines() if line.startswith("MemTotal")), 0)
    return round(total_kb / 2**20, 1) or None


def _gpus() -> list[str]:
    """The GPUs nvidia-smi lists (names), without importing torch; [] where there is none."""
    if shutil.which("nvidia-smi") is None:
        return []
    result = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return [line.strip() for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []


def machine() -> dict:
    """This machine as the results record it: CPU model, the flags that change graft's choices, the
    cores this process may use, RAM, GPUs, OS and Python."""
    model, flags = _cpuinfo()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model,
            "flags": {"avx2": "avx2" in flags, "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
                      "amx": bool({"amx_tile", "amx_bf16"} & flags)},
            "cores": cores, "ram_gb": _ram_gb(), "gpus": _gpus(), "os": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict:
    """Installed versions of the packages that change the figures (absent ones left out)."""
    found = {}
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def commit() -> str:
    """`git rev-parse --short HEAD`, plus " dirty" when the working tree has changes; "unknown" outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        changes = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} dirty" if changes else head


def command_line() -> str:
    """This process's command line as typed: `python -m benchmarks ...`, `python -m benchmarks.calibration.NAME ...`."""
    return shlex.join(["python", *sys.orig_argv[1:]])


def provenance(*, parameters: dict, command: str | None = None) -> dict:
    """What `record` writes beside the figures (`command`: default this process's command line).
    Take it when a benchmark starts, so that the commit is the code it measured."""
    return {"machine": machine(), "versions": versions(), "commit": commit(),
            "date": datetime.date.today().isoformat(), "command": command or command_line(), "parameters": parameters}


def record(key: str, figures: dict, about: dict, path: Path = RESULTS) -> dict:
    """Store `figures` under `key` with `about` (from `provenance`) beside them; other keys are kept.
    The file is written atomically (graft.io). Returns the entry."""
    entry = {"figures": figures, **about}
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved[key] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, saved)
    return entry


def figures(key: str, path: Path = RESULTS) -> dict | None:
    """The figures stored under `key`, or None."""
    saved = json.loads(path.read_text()) if path.exists() else {}
    return (saved.get(key) or {}).get("figures")
