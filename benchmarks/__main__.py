"""`python -m benchmarks`: graft's benchmark suite, the figures docs/benchmarks.md states.

    python -m benchmarks                                   # every benchmark, full size (hours on 2 cores)
    python -m benchmarks --only predict,engines            # some of them
    python -m benchmarks --quick                           # small sizes: checks the harness in a few minutes
    python -m benchmarks --only predict --set predict.images=100000 --set predict.img_size=64
    python -m benchmarks --list                            # the benchmarks and their parameters

Run it from the repository's root. Each benchmark is a module of this package with one entry
function, `run(context, **parameters) -> dict`, and its declared PARAMETERS (full and quick values),
and runs in a fresh child process; its figures go into benchmarks/results.json under its name
(benchmarks/_results.py), with the machine, versions, commit, date, command and parameters beside them. `--quick` writes to
benchmarks/results-quick.json unless `--results` says otherwise: its sizes are too small to be figures.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType

from ._results import RESULTS, command_line, provenance, record
from ._runs import SHARED_DATASETS, BenchmarkFailed, Context, Parameter, environment, generated_data

SUITE = ("frozen_training", "extraction", "finetune", "memory", "run_memory", "fit_memory", "cached_run", "labelling_round", "predict", "engines",
         "serve",
         "startup", "fault_injection", "agreement")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = SHARED_DATASETS / "cifar10-dev"
QUICK_RESULTS = RESULTS.with_name("results-quick.json")


def load(name: str) -> ModuleType:
    return importlib.import_module(f"{__package__}.{name}")


def parameters(module: ModuleType, quick: bool, settings: dict[str, str]) -> dict:
    """The module's parameters at the preset's values, with `--set` values (converted to the
    declared value's type) over them."""
    declared: dict[str, Parameter] = module.PARAMETERS
    values = {name: (p.quick if quick else p.full) for name, p in declared.items()}
    for name, text in settings.items():
        if name not in declared:
            raise SystemExit(f"--set {module.__name__.rsplit('.', 1)[-1]}.{name}: no such parameter; "
                             f"it has {', '.join(declared) or 'none'} (python -m benchmarks --list)")
        kind = type(declared[name].full)
        values[name] = text.lower() in ("1", "true", "yes") if kind is bool else kind(text)
    return values


def listing() -> str:
    lines = []
    for name in SUITE:
        module = load(name)
        lines.append(f"{name}: {(module.__doc__ or '').strip().splitlines()[0]}")
        for parameter, p in module.PARAMETERS.items():
            lines.append(f"    {parameter} = {p.full!r} (quick {p.quick!r}): {p.help}")
    return "\n".join(lines)


def run_one(name: str, *, data: Path, shared: Path, quick: bool, settings: dict[str, str], results: Path,
            command: str) -> int:
    """Run benchmark `name` in this process and record its figures: 0 when it measured (and, for a
    check, passed), 1 when it failed, 2 when it had nothing to measure."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"graft-benchmark-{name}-") as tmp:
        work = Path(tmp)
        context = Context(data=data, work=work, shared=shared, quick=quick, env={"GRAFT_CACHE": str(work / "cache")})
        try:
            module = load(name)
            values = parameters(module, quick, settings)
            about = provenance(command=command, parameters={"data": str(data), "quick": quick, **values})
            print(f"{name}: {', '.join(f'{k}={v}' for k, v in values.items())}", flush=True)
            with environment(context.env):  # graft code in this process caches in the work folder too
                figures = module.run(context, **values)
        except Exception as error:
            print(f"{name} FAILED: {error}", file=sys.stderr, flush=True)
            if not isinstance(error, BenchmarkFailed):
                traceback.print_exc()
            return 1
    seconds = time.perf_counter() - started
    if figures is None:  # nothing to measure here (a check whose script is absent)
        print(f"{name}: skipped ({seconds:.0f} s)", flush=True)
        return 2
    key = module.key(values) if hasattr(module, "key") else name
    record(key, {**figures, "benchmark_s": round(seconds, 1)}, about, results)
    print(f"{name}: {figures.get('summary', '')} ({seconds:.0f} s; under {key!r} in {results})", flush=True)
    return 1 if figures.get("passed") is False else 0  # a check that ran and did not hold: recorded, and it fails


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated, from: {', '.join(SUITE)}")
    parser.add_argument("--data", type=Path, default=None,
                        help="train/ and test/ class folders (default ../shared/datasets/cifar10-dev; a small "
                             "generated set where that is absent)")
    parser.add_argument("--quick", action="store_true", help="small sizes: proves the harness works, measures nothing")
    parser.add_argument("--set", action="append", default=[], metavar="NAME.PARAMETER=VALUE",
                        help="change one parameter of one benchmark (repeatable)")
    parser.add_argument("--results", type=Path, default=None,
                        help=f"the results file (default {RESULTS.relative_to(ROOT)}; with --quick "
                             f"{QUICK_RESULTS.relative_to(ROOT)})")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and their parameters, run nothing")
    # Each benchmark runs in a child process of its own (`--one NAME`): a fresh interpreter, so that
    # none measures imports, memory or state another left behind, and a crash stops only that one.
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--shared", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--command", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.list:
        print(listing())
        return 0
    chosen = options.only.split(",") if options.only else list(SUITE)
    unknown = [name for name in chosen if name not in SUITE]
    if unknown:
        parser.error(f"--only {','.join(unknown)}: no such benchmark; choose from {', '.join(SUITE)}")
    settings: dict[str, dict[str, str]] = {}
    for item in options.set:
        target, equals, value = item.partition("=")
        bench, dot, name = target.partition(".")
        if bench not in SUITE or not name or not dot or not equals:
            parser.error(f"--set {item}: write NAME.PARAMETER=VALUE, NAME one of {', '.join(SUITE)}")
        settings.setdefault(bench, {})[name] = value
    for bench, values in settings.items():  # refuse a misspelt parameter before anything runs
        parameters(load(bench), options.quick, values)
    results_path = (options.results or (QUICK_RESULTS if options.quick else RESULTS)).resolve()
    if options.one:
        return run_one(options.one, data=options.data, shared=options.shared, quick=options.quick,
                       settings=settings.get(options.one, {}), results=results_path, command=options.command)
    command = command_line() if argv is None else shlex.join(["python", "-m", "benchmarks", *argv])

    failed, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="graft-benchmarks-") as tmp:
        data = options.data or DEFAULT_DATA
        if options.data is None and not DEFAULT_DATA.exists():
            data = generated_data(Path(tmp) / "generated-data")
            print(f"{DEFAULT_DATA} is not there: a small generated set instead ({data})")
        if not (data / "train").is_dir() or not (data / "test").is_dir():
            parser.error(f"--data {data}: needs train/ and test/ folders of class folders")
        print(f"data: {data}; results: {results_path}; {'quick' if options.quick else 'full'} sizes", flush=True)
        for name in chosen:
            child = [sys.executable, "-m", __package__, "--one", name, "--data", str(data.resolve()),
                     "--shared", str(Path(tmp) / "shared"), "--results", str(results_path), "--command", command,
                     *(["--quick"] if options.quick else []),
                     *(f"--set={name}.{key}={value}" for key, value in settings.get(name, {}).items())]
            code = subprocess.run(child, cwd=ROOT).returncode
            if code == 2:
                skipped.append(name)
            elif code != 0:
                failed.append(name)
    print(f"done: {len(chosen) - len(failed) - len(skipped)} recorded in {results_path}"
          + (f"; skipped: {', '.join(skipped)}" if skipped else "") + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
