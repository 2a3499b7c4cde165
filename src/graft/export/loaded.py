"""graft's predictors over the other export formats: an OpenVINO IR (`model.xml` + `model.bin`) and a
TorchScript archive (`model.pt`), each read with its metadata (graft.export.openvino and
graft.export.torchscript say where it is), and predicting through graft.predictor.BatchPredictor as
every model file does: the same preparation, batching, read-ahead, tta and answers.

OpenVINO computes in f32 here (without the hint it would compute in bf16 on CPUs that have it, and
answers move). Loading a TorchScript archive runs the TorchScript program inside it: load only
archives you trust (graft's own model files never run code).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from ..predictor import FilePredictor
from ..runtime import run_in_slices
from .unknown_graph import COMBINED_OUTPUT, read_graph_score, split_scores

INSTALL_OPENVINO = "pip install 'graft[openvino]'"


class OpenVinoModel(FilePredictor):
    """An OpenVINO IR from `graft export --format openvino`, run by OpenVINO on the CPU in f32."""

    engine = "openvino"

    def __init__(self, path: str | Path):
        try:
            import openvino
        except ImportError:
            raise ModelFileError(f"{path}: running an OpenVINO model needs openvino, an optional extra: "
                                 f"{INSTALL_OPENVINO}") from None
        self.path = Path(path)
        if not self.path.is_file() or not self.path.with_suffix(".bin").is_file():
            raise ModelFileError(f"{self.path}: no such file, or no {self.path.with_suffix('.bin').name} beside it; "
                                 "give the model.xml that `graft export RUN --format openvino` wrote.")
        core = openvino.Core()
        try:
            model = core.read_model(str(self.path))
            self.compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        except Exception as error:  # OpenVINO raises its own exception types for unreadable files
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise ModelFileError(f"{self.path}: not an OpenVINO model OpenVINO can read ({first}).") from None
        try:
            keys = list(model.get_rt_info()["graft"])
            info = {key: json.loads(model.get_rt_info(["graft", key]).astype(str)) for key in keys}
        except Exception:  # no "graft" section, or values that are not JSON
            info = {}
        self.read_metadata(info)
        outputs = {name for output in self.compiled.outputs for name in output.get_names()}
        self.unknown = read_graph_score(info, outputs, self.path)  # an IR that computes the score itself

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        return run_in_slices(lambda batch: np.asarray(self.compiled({"pixels": batch})["probabilities"]), pixels)

    def probabilities_and_unknown(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return split_scores(run_in_slices(lambda batch: np.asarray(self.compiled({"pixels": batch})[COMBINED_OUTPUT]),
                                          pixels))


class TorchScriptModel(FilePredictor):
    """A TorchScript archive from `graft export --format torchscript`, run by torch on the CPU."""

    engine = "torch"

    def __init__(self, path: str | Path):
        import torch

        from .torchscript import EXTRA_FILE  # where graft.export.torchscript writes the metadata

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such file; give the model.pt that `graft export RUN "
                                 "--format torchscript` wrote.")
        extra = {EXTRA_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; it still works
                self.module = torch.jit.load(str(self.path), map_location="cpu", _extra_files=extra).eval()
        except Exception as error:  # torch raises several kinds for files it cannot read
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise ModelFileError(f"{self.path}: not a TorchScript archive torch can read ({first}).") from None
        try:
            info = json.loads(extra[EXTRA_FILE] or "{}")
        except ValueError:
            info = {}
        self.read_metadata(info)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        def run(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return self.module(torch.from_numpy(batch))[1].numpy()

        return run_in_slices(run, pixels)
