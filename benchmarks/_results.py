"""benchmarks/results.json: every benchmark script stores its figures under its own keys, keeping the others."""

from __future__ import annotations

import json
from pathlib import Path

from graft.io import write_json_atomic

RESULTS = Path(__file__).with_name("results.json")


def store(entries: dict, path: Path = RESULTS) -> Path:
    """Set `entries`' keys in the results file (the file's other keys are kept), written atomically."""
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved.update(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(path, saved)
