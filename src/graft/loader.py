"""`graft.load(path)`: any model file graft writes, as a graft.predictor.Predictor.

- a run folder (or its graft.json / model.safetensors): graft.classifier.Classifier (torch);
- a `.onnx` from `graft export`: graft.export.exported.ExportedModel (ONNX Runtime, no torch);
- a `.xml` (OpenVINO IR, `model.bin` beside it): graft.export.loaded.OpenVinoModel;
- a `.pt` (TorchScript): graft.export.loaded.TorchScriptModel (loading it runs its code: trust it).

`open_predictor` is what `graft predict`, `graft evaluate` and `graft serve` open: the same, except
that a run folder whose engine here is ONNX Runtime (graft.engines.choice: a CPU under auto) is
opened as its kept export (graft.export.cached) without importing torch at all; a missing export
is written first in a child process, so that torch's memory goes when it ends. Both give the same
answers: graft.load(RUN) runs that same export in ONNX Runtime.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import GraftError, ModelFileError
from .model_files import META_FILE, WEIGHTS_FILE

if TYPE_CHECKING:
    from .predictor import BatchPredictor

# An exported model file and the engine it runs in.
MODEL_FILES = {".onnx": "onnxruntime", ".xml": "openvino", ".pt": "torch"}


def load(path: str | Path, *, engine: str = "auto") -> BatchPredictor:
    """The model at `path` (see the module's text), ready to predict and evaluate. `engine`: what
    runs a run folder (auto, torch, onnxruntime, openvino); an exported file runs in its own."""
    path = Path(path)
    suffix = _kind(path)
    if suffix == "run":
        from .classifier import load as load_run

        return load_run(path, engine=engine)
    if engine not in ("auto", MODEL_FILES[suffix]):
        raise GraftError(f"--engine {engine}: an exported {suffix} model runs in {_ENGINE_NAMES[MODEL_FILES[suffix]]}; "
                         "drop --engine, or predict with the run folder.")
    if suffix == ".onnx":
        from .export.exported import ExportedModel

        return ExportedModel(path)
    from .export.loaded import OpenVinoModel, TorchScriptModel

    return OpenVinoModel(path) if suffix == ".xml" else TorchScriptModel(path)


def open_predictor(path: str | Path, *, engine: str = "auto", say=None) -> BatchPredictor:
    """`load`, except that a run folder that ONNX Runtime predicts here is opened as its kept export,
    without torch (see the module's text). `say`: where notes go (default: stderr). Its weights are
    checked against graft.json once either way."""
    from .engines.choice import choose_engine, likely_device
    from .model_files import read_record, read_unknown

    path = Path(path)
    if _kind(path) != "run":
        return load(path, engine=engine)
    record, folder = read_record(path, check_weights=False)  # which engine decides whether torch is needed
    precision = "bf16" if record.inference_precision == "bf16" else "32"
    if choose_engine(engine, device=likely_device(), precision=precision) != "onnxruntime":
        return load(folder, engine=engine)  # the weights are checked as they are read
    record, folder = read_record(folder)  # the weights (and the score of unknown images), checked once
    say = say or (lambda message: print(message, file=sys.stderr))
    try:
        return _kept_export(folder, say, unknown=read_unknown(folder, record))
    except GraftError as error:
        if engine != "auto":
            raise
        say(f"Warning: {error} Predicting in PyTorch (fp32) instead.")
        return load(folder, engine="torch")


def _kept_export(folder: Path, say, *, unknown=None) -> BatchPredictor:
    from .export.cached import export_path
    from .export.exported import ExportedModel

    path = export_path(folder)
    for attempt in (1, 2):
        if not path.exists():
            say(f"Exporting {folder} to ONNX once for fast prediction (kept in {path.parent}).")
            _export_in_child(folder, path)
        try:
            return ExportedModel(path, unknown=unknown)
        except ModelFileError:  # damaged in the cache (files there are written whole): export it again
            if attempt == 2:
                raise
            path.unlink(missing_ok=True)
    raise AssertionError("unreachable")


def _export_in_child(folder: Path, path: Path) -> None:
    """Write the kept export in a process of its own: torch and the tracer's memory go when it ends."""
    result = subprocess.run([sys.executable, "-m", "graft.loader", str(folder), str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise GraftError(f"The ONNX export of {folder} failed: {lines[-1] if lines else 'no message'}")


def _kind(path: Path) -> str:
    """"run" for a run or model folder (or a path that is not there: its error names the folder), else
    the suffix of an exported model file; GraftError for anything else."""
    suffix = path.suffix.lower()
    if suffix in MODEL_FILES and not path.is_dir():
        return suffix
    if path.is_dir() or path.name in (META_FILE, WEIGHTS_FILE) or not path.exists():
        return "run"
    raise GraftError(f"{path}: not a model graft can open. Give a run folder (runs/NAME), or the model.onnx, "
                     "model.xml or model.pt that `graft export` wrote.")


_ENGINE_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "torch": "torch (TorchScript)"}


def _main(folder: str, out: str) -> None:
    from .classifier import load as load_run
    from .export.cached import write_export

    try:
        write_export(load_run(folder), Path(out))
    except GraftError as error:
        print(error, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    _main(*sys.argv[1:3])
