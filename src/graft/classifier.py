"""A trained graft model as users hold it: the network with its classes, preprocessing and record,
predicting and evaluating as every model file does (graft.predictor.BatchPredictor).

Its engine is chosen once, by graft.engines.choice.choose_engine (the options and the machine:
ONNX Runtime on a CPU, torch on a GPU or where --precision bf16 was asked). In ONNX Runtime or
OpenVINO it runs the whole classifier as one ONNX graph: the run's kept export (graft.export.cached:
its backbone's graph plus the head, traced once per backbone and size, never per run), the very file
`graft predict RUN` and `graft serve` run, so every way of predicting a run gives the same answers.
In torch it runs the network itself, in its inference precision (fp32 unless --precision bf16 was
asked), in slices on a CPU (graft.engines.forward). A network that cannot be turned into that graph
is predicted in torch fp32 under auto, with a warning. A multi-label model (its record's task) gives
each class's sigmoid, in every engine, and answers with the labels over its record's thresholds.
A model with a score of unknown images (graft.unknown, kept in its run folder) takes the backbone's
pooled features from the same pass (the ONNX graph's `probabilities_and_features` output; in torch,
the backbone then the head) and answers unknown over the score's threshold.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data.config import DataConfig
from .data.discover import Sample
from .data.inputs import ImageInput
from .errors import GraftError
from .evaluation import Evaluation, MultiLabelEvaluation
from .model import GraftModel
from .model_files import load_model, read_unknown, save_model
from .prediction import Prediction
from .predictor import BatchPredictor, model_metadata, record_thresholds
from .record import RunRecord
from .runtime import Runtime
from .unknown import UnknownScore


class Classifier(BatchPredictor):
    """A grafted model plus everything needed to use it: class names, preprocessing, provenance.

    `runtime`: the machine settings it predicts with (graft.train hands over its own: its engine and
    inference precision); None: engine auto, and the precision its record states. `folder`: the run
    folder it was saved in (graft.load sets it), whose kept export the ONNX engines run; None: the
    same graph, made in a temporary file. `engine`: auto, torch, onnxruntime or openvino (default:
    the runtime's, else auto). `task`: "single" or "multilabel" (default: the record's, else single);
    a multi-label model's `thresholds` (C numbers in class order) default to the record's. `unknown`:
    its score of unknown images (graft.unknown.UnknownScore); default: the one kept in `folder` where
    its record has one, else none.
    """

    def __init__(self, model: GraftModel, classes: list[str], record: RunRecord | None = None,
                 runtime: Runtime | None = None, *, folder: str | Path | None = None, engine: str | None = None,
                 task: str | None = None, thresholds: np.ndarray | None = None, unknown: UnknownScore | None = None):
        self.model = model
        self.classes = list(classes)
        self.record = record  # how the model was made (graft.json); None for a model graft did not train
        self.task = task or (record.task if record is not None else "single")
        if thresholds is None and record is not None and self.task == "multilabel":
            thresholds = record_thresholds(record)
        self.thresholds = None if thresholds is None else np.asarray(thresholds, dtype=np.float64)
        self.runtime = runtime
        self.folder = Path(folder) if folder is not None else None
        # Read from `folder` on first use (`unknown`): its arrays hold every training embedding (0.5 GB
        # on 100,000 images), which what only looks inside the network (the report's figures) never needs.
        self._unknown = unknown
        self._unknown_unread = (unknown is None and record is not None and record.unknown is not None
                                and self.folder is not None)
        self.requested_engine = engine or (runtime.engine if runtime is not None else "auto")
        self._run: _Run | None = None
        self._siblings: dict[str, Classifier] = {}
        self._lock = threading.Lock()
        self._unknown_lock = threading.Lock()

    @property
    def data_config(self) -> DataConfig:
        return self.model.backbone.data_config

    @property
    def metadata(self) -> dict[str, Any]:
        return model_metadata(self.classes, self.data_config, self.record, task=self.task, thresholds=self.thresholds)

    @property
    def asked_precision(self) -> str:
        """The inference precision asked for: the runtime's, else the record's ("bf16" only where
        --precision bf16 was asked when it trained), else fp32."""
        if self.runtime is not None:
            return self.runtime.inference_precision
        return "bf16" if self.record is not None and self.record.inference_precision == "bf16" else "32"

    @property
    def engine(self) -> str:  # type: ignore[override]
        """What computes its answers: "torch", "onnxruntime" or "openvino" (chosen on first use)."""
        return self._ready().engine

    @property
    def precision(self) -> str:  # type: ignore[override]
        """What its answers are computed in: "32", or "bf16" (torch, where --precision bf16 was asked)."""
        return self._ready().precision

    @property
    def unknown(self) -> UnknownScore | None:
        """Its score of unknown images (None: none), read from its folder the first time it is asked for."""
        if self._unknown_unread:
            with self._unknown_lock:  # its own lock: `using` asks for it while holding _lock
                if self._unknown_unread and self.folder is not None and self.record is not None:
                    self._unknown, self._unknown_unread = read_unknown(self.folder, self.record), False
        return self._unknown

    @unknown.setter
    def unknown(self, value: UnknownScore | None) -> None:
        self._unknown, self._unknown_unread = value, False

    @property
    def scores_unknown(self) -> bool:
        """Whether it has a score of unknown images, without reading its arrays."""
        return self._unknown_unread or self._unknown is not None

    def using(self, engine: str | None) -> Classifier:
        """This classifier in another engine (None: as it is), sharing the model and record."""
        if engine is None or engine == self.requested_engine:
            return self
        with self._lock:
            if engine not in self._siblings:
                self._siblings[engine] = Classifier(self.model, self.classes, self.record, self.runtime,
                                                    folder=self.folder, engine=engine, task=self.task,
                                                    thresholds=self.thresholds, unknown=self.unknown)
            return self._siblings[engine]

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        return self._ready()(pixels)

    def probabilities_and_features(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return self._ready().with_features(pixels)

    def predict(self, images: ImageInput | Iterable[ImageInput], *, top_k: int = 5, batch_size: int = 64,
                tta: bool = False, threshold: float | None = None, engine: str | None = None) -> list[Prediction]:
        """graft.predictor.BatchPredictor.predict; `engine`: another engine than the classifier's."""
        return BatchPredictor.predict(self.using(engine), images, top_k=top_k, batch_size=batch_size, tta=tta,
                                      threshold=threshold)

    def predict_iter(self, images: Sequence[ImageInput], *, top_k: int = 5, batch_size: int = 64,
                     tta: bool = False, threshold: float | None = None,
                     engine: str | None = None) -> Iterator[Prediction]:
        return BatchPredictor.predict_iter(self.using(engine), images, top_k=top_k, batch_size=batch_size, tta=tta,
                                           threshold=threshold)

    def evaluate(self, data: str | Path, *, batch_size: int = 64, tta: bool = False, threshold: float | None = None,
                 engine: str | None = None) -> Evaluation | MultiLabelEvaluation:
        return BatchPredictor.evaluate(self.using(engine), data, batch_size=batch_size, tta=tta, threshold=threshold)

    def evaluate_images(self, data: str | Path, *, batch_size: int = 64, tta: bool = False,
                        threshold: float | None = None,
                        engine: str | None = None) -> tuple[Evaluation | MultiLabelEvaluation, list[dict]]:
        return BatchPredictor.evaluate_images(self.using(engine), data, batch_size=batch_size, tta=tta,
                                              threshold=threshold)

    def backbone_weights_id(self) -> str:
        """The feature cache's name for this model's backbone weights, as training named them: the
        starting weights where the run left them unchanged (so the features training cached are read
        back), else a digest of the trained weights' values. Needs the run record."""
        import hashlib

        from .backbones.weights import describe_weights
        from .strategies import get_strategy

        if self.record is None:
            raise GraftError("This model has no run record (graft did not train it): which weights its backbone "
                             "started from is not known.")
        backbone, config = self.model.backbone, self.record.config
        plan = get_strategy(self.record.strategy)
        if plan.pretrained and not (plan.image_phase and plan.trainable(backbone, config.strategy) != []):
            return describe_weights(config.strategy.weights)
        digest = hashlib.sha256()
        for name, tensor in sorted(backbone.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return f"run:{digest.hexdigest()[:24]}"

    def save(self, folder: str | Path) -> Path:
        if self.record is None:
            raise GraftError("This model has no run record (graft did not train it), so it cannot be saved as a graft model.")
        return save_model(self.model, self.record, folder, unknown=self.unknown)

    def _ready(self) -> _Run:
        with self._lock:
            if self._run is None:
                self._run = self._open()
            return self._run

    def _open(self) -> _Run:
        """The engine that computes the answers, ready: chosen, and its graph made where it runs one."""
        from .engines.choice import choose_engine
        from .runtime import accelerator_device

        precision = self.asked_precision
        engine = choose_engine(self.requested_engine, device=accelerator_device().type, precision=precision)
        if engine != "torch":
            try:
                return _GraphRun(engine, self._graph, classes=len(self.classes) if self.scores_unknown else None)
            except (GraftError, OSError) as error:  # CompileError and ExportError are GraftErrors
                if self.requested_engine != "auto":
                    raise
                print(f"Warning: {error} Predicting in PyTorch (fp32) instead.", file=sys.stderr)
                precision = "32"
        return _TorchRun(self.model, (self.runtime or Runtime()).but(engine="torch", inference_precision=precision),
                         multilabel=self.multilabel)

    def _graph(self) -> Path:
        from .export.cached import classifier_graph

        return classifier_graph(self, self.folder, say=lambda message: print(message, file=sys.stderr))


class _Run:
    engine: str
    precision: str = "32"

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def with_features(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The probabilities and the backbone's pooled features (None where this run cannot give them)."""
        return self(pixels), None


class _GraphRun(_Run):
    """The whole classifier's ONNX graph (`make` writes it and returns its path) in ONNX Runtime, its
    slices side by side (graft.engines.sliced), or in OpenVINO in f32. A file that cannot be opened
    (damaged on disk) is made once more. `classes` (the number of classes) asks for the backbone's
    pooled features too: the graph's `probabilities_and_features` output, split after `classes` columns."""

    def __init__(self, engine: str, make: Callable[[], Path], *, classes: int | None = None):
        self.engine, self.classes = engine, classes
        self.output = "probabilities" if classes is None else "probabilities_and_features"
        path = make()
        try:
            self.run = self._open(path)
        except Exception:  # a damaged file in the cache (graft writes files whole): write it again
            path.unlink(missing_ok=True)
            self.run = self._open(make())

    def _open(self, path: Path) -> Callable[[np.ndarray], np.ndarray]:
        if self.engine == "onnxruntime":
            from .engines.sliced import SlicedSession

            return SlicedSession(path, output=self.output)
        import openvino

        from .runtime import run_in_slices

        # f32: on CPUs with bf16 OpenVINO would otherwise compute in bf16 and move answers.
        compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return lambda pixels: run_in_slices(lambda part: np.asarray(compiled({"pixels": part})[self.output]), pixels)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self.with_features(pixels)[0]

    def with_features(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outputs = self.run(pixels)
        if self.classes is None:
            return outputs, None
        return np.ascontiguousarray(outputs[:, : self.classes]), np.ascontiguousarray(outputs[:, self.classes :])


class _TorchRun(_Run):
    """The network in torch (graft.engines.forward: channels_last, slices on a CPU), in eval mode
    for the call and left as it was, in `runtime.inference_precision`: a softmax over the classes, or
    (`multilabel`) each class's sigmoid."""

    engine = "torch"

    def __init__(self, model: GraftModel, runtime: Runtime, *, multilabel: bool = False):
        self.model, self.runtime, self.precision = model, runtime, runtime.inference_precision
        self.multilabel = multilabel

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        from .engines.forward import frozen_forward

        config = self.model.backbone.data_config
        with frozen_forward(self.model, runtime=self.runtime, input_size=config.input_size) as forward:
            logits = forward(torch.from_numpy(np.ascontiguousarray(pixels)))
            return (logits.sigmoid() if self.multilabel else logits.softmax(dim=-1)).numpy()

    def with_features(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The backbone's pooled features, then the head on them (fp32), in one pass."""
        import torch

        from .engines.forward import frozen_forward

        config, head = self.model.backbone.data_config, self.model.head
        with frozen_forward(self.model.backbone, runtime=self.runtime, input_size=config.input_size) as forward:
            features = forward(torch.from_numpy(np.ascontiguousarray(pixels))).float()
        was_training = head.training
        try:
            with torch.inference_mode():
                logits = head.eval()(features)
        finally:
            head.train(was_training)
        probabilities = logits.sigmoid() if self.multilabel else logits.softmax(dim=-1)
        return probabilities.numpy(), features.numpy()


def predict_logits(model: GraftModel, samples: Sequence[Sample], config: DataConfig, *, runtime: Runtime,
                   tta: bool = False) -> np.ndarray:
    """The log of the class probabilities of each sample's image (N x classes): softmax of these is
    the probabilities, their argmax the answer. With `tta`, of the mean of the image's and its mirror
    image's probabilities. `model` predicts as a Classifier with `runtime` (its engine and inference
    precision) does; `config` is its backbone's preprocessing. An image that cannot be read raises.

    (The training loop's name for `Classifier(model, classes, runtime=runtime).evaluate_samples`.)"""
    from .heads.head import final_linear

    if config != model.backbone.data_config:
        raise ValueError("predict_logits prepares images as the model's backbone says (its data_config)")
    classes = [str(index) for index in range(final_linear(model.head).out_features)]
    classifier = Classifier(model, classes, runtime=runtime)
    probabilities = classifier.probabilities_of([sample.path for sample in samples], batch_size=runtime.batch_size,
                                                tta=tta)
    with np.errstate(divide="ignore"):
        return np.log(probabilities)


def load(path: str | Path, *, engine: str | None = None) -> Classifier:
    """Load a model saved by graft (a run folder or a folder with model.safetensors + graft.json).
    `engine`: what predicts with it (graft.engines: auto, torch, onnxruntime, openvino; default auto).
    graft.load opens this and every export format."""
    model, record, folder = load_model(path)
    return Classifier(model, record.classes, record, folder=folder, engine=engine)
