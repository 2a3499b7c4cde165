"""graft's benchmark suite: `python -m benchmarks` (see __main__.py and docs/benchmarks.md).

One module per benchmark, each with PARAMETERS and `run(context, **parameters) -> dict`; shared
helpers in _results.py (recording a figure with its machine and commit) and _runs.py (running the
graft command, interleaved rounds, memory, data, a small model). benchmarks/calibration/ holds the
scripts that measured graft's defaults and thresholds (docs/advise.md, docs/audit.md, ...).
"""
