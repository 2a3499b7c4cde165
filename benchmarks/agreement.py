"""Every way of predicting gives the same top-1: benchmarks/prediction_agreement.py, run as a check where it exists.

Where that module follows the suite's contract (PARAMETERS and `run(context, **parameters) -> dict`),
it runs as any benchmark does, its parameters settable with `--set agreement.NAME=VALUE`. Otherwise
it runs as a script, `python benchmarks/prediction_agreement.py --data DATA`, and the check passes
when it exits with 0 (its last lines of output are recorded). Where the file is absent the check is
skipped and nothing is recorded.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from ._runs import Context

SCRIPT = Path(__file__).with_name("prediction_agreement.py")


def _target() -> ModuleType | None:
    """prediction_agreement as a module of this package, where it exists and follows the contract."""
    if not SCRIPT.exists():
        return None
    try:
        module = importlib.import_module(f"{__package__}.prediction_agreement")
    except ImportError:  # written as a script (sibling imports): run it as one
        return None
    return module if hasattr(module, "PARAMETERS") and hasattr(module, "run") else None


TARGET = _target()
PARAMETERS = dict(TARGET.PARAMETERS) if TARGET is not None else {}


def run(context: Context, **parameters) -> dict | None:
    if TARGET is not None:
        return TARGET.run(context, **parameters)
    if not SCRIPT.exists():
        context.log(f"{SCRIPT.name} is not there: nothing to check")
        return None
    import os

    result = subprocess.run([sys.executable, str(SCRIPT), "--data", str(context.data)], cwd=SCRIPT.parent.parent,
                            env={**os.environ, **context.env, "COLUMNS": "200"}, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    tail = (result.stdout + result.stderr).strip().splitlines()[-20:]
    for line in tail:
        context.log(line)
    return {"summary": f"{SCRIPT.name} exited with {result.returncode}", "passed": result.returncode == 0,
            "returncode": result.returncode, "output_tail": tail}
