"""benchmarks/results.json: every benchmark script stores its figures under its own keys, keeping the others."""

from __future__ import annotations

import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from graft.io import write_json_atomic

RESULTS = Path(__file__).with_name("results.json")


def store(entries: dict, path: Path = RESULTS) -> Path:
    """Set `entries`' keys in the results file (the file's other keys are kept), written atomically."""
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved.update(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(path, saved)


def machine() -> dict:
    """This machine as the results record it: CPU model, cores, native bf16 and AMX, versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {}
    for package in ("torch", "lightning", "graft"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return {"cpu": model, "cores": cores, "avx512_bf16": "avx512_bf16" in flags,
            "amx": bool({"amx_tile", "amx_bf16"} & flags), "python": platform.python_version(), **versions}
