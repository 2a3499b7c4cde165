"""An exported ONNX classifier run by ONNX Runtime alone: predicting without torch.

`graft export RUN` writes model.onnx with everything a program needs in its metadata; this is that
program inside graft: `graft.load("model.onnx")`, `graft predict model.onnx photos/ --csv out.csv`,
and `graft predict RUN` wherever the run's kept export is its engine (graft.export.cached). It
imports neither torch nor timm, so it starts sooner and streams in a fraction of the memory a torch
prediction needs (docs/benchmarks.md, "Batch prediction", has the figures).

It is a graft.predictor.BatchPredictor: images are read, prepared (graft.data.prepare, as the
metadata says: the same pixels as every other way of predicting), batched and read ahead there;
only the batch's probabilities are computed here, by ONNX Runtime, the batch's slices side by side
(graft.engines.sliced).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..engines.sliced import SlicedSession
from ..errors import ModelFileError
from ..predictor import FilePredictor
from .unknown_graph import COMBINED_OUTPUT, read_graph_score, split_scores

if TYPE_CHECKING:
    from ..unknown import UnknownScore

FEATURES_OUTPUT = "probabilities_and_features"  # graft.export.onnx: probabilities then pooled features, per image


class ExportedModel(FilePredictor):
    """An ONNX file from `graft export` (its metadata inside), ready to predict.

    `threads`: the cores ONNX Runtime may use (default: all this process may run on). `unknown`: a
    score of unknown images to answer with (a run's, graft.loader gives its kept export the run's);
    it reads the graph's pooled features, so the file must have them (every export graft puts together
    from its backbone's graph does), else ModelFileError. Without it, a file from `graft export` that
    computes its own score (graft.export.unknown_graph; `in_graph`) answers with that one.
    """

    engine = "onnxruntime"

    def __init__(self, path: str | Path, *, threads: int | None = None, unknown: UnknownScore | None = None):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ModelFileError(f"{path}: running an ONNX model needs onnxruntime: pip install onnxruntime") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such file; give the model.onnx that `graft export RUN` wrote.")
        try:
            self.session = SlicedSession(self.path, threads=threads,
                                         output="probabilities" if unknown is None else FEATURES_OUTPUT)
        except Exception as error:  # ONNX Runtime raises its own exception types for unreadable files
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise ModelFileError(f"{self.path}: not an ONNX model ONNX Runtime can read ({first}).") from None
        try:
            info = {key: json.loads(value) for key, value in self.session.metadata().items()}
        except ValueError as error:
            raise ModelFileError(f"{self.path}: its metadata is not graft's ({error}).") from None
        self.read_metadata(info)
        outputs = {output.name for output in self.session.session.get_outputs()}
        if unknown is not None and FEATURES_OUTPUT not in outputs:
            raise ModelFileError(f"{self.path}: the graph does not give the image embeddings the score of unknown "
                                 "images reads; predict with the run folder in torch (--engine torch).")
        # `graft export` put the score in the file: it gives each image's with the probabilities
        in_file = read_graph_score(info, outputs, self.path) if unknown is None else None
        self.in_graph = in_file is not None
        if self.in_graph:
            self.session.outputs = [COMBINED_OUTPUT]
        self.unknown = unknown if unknown is not None else in_file

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities for a uint8 batch (N x 3 x H x W), run in slices side by side
        (graft.engines.sliced: bounded memory, one core each)."""
        return self.probabilities_and_features(pixels)[0]

    def probabilities_and_features(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The probabilities and, for a model with a score of unknown images, the pooled features, from one pass."""
        outputs = self.session(pixels)
        if self.in_graph:  # probabilities, then the score
            return split_scores(outputs)[0], None
        if self.unknown is None:
            return outputs, None
        count = len(self.classes)
        return np.ascontiguousarray(outputs[:, :count]), np.ascontiguousarray(outputs[:, count:])

    def probabilities_and_unknown(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return split_scores(self.session(pixels)) if self.in_graph else super().probabilities_and_unknown(pixels)
