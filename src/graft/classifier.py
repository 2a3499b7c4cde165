"""A trained graft model as users hold it: classes, preprocessing, `predict` and `evaluate`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .backbones import create_backbone
from .data.config import DataConfig
from .data.dataset import ImageDataset
from .data.discover import Sample, find_eval_data
from .data.transforms import eval_transform
from .errors import GraftError, ModelFileError
from .evaluation import Evaluation, evaluate_predictions
from .export import META_FILE, WEIGHTS_FILE, read_model_files, save_model
from .heads import HeadConfig, create_head
from .model import GraftModel
from .record import RunRecord
from .runtime import Runtime


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]]  # (class name, probability), most likely first

    @property
    def label(self) -> str:
        return self.top[0][0]

    def to_dict(self) -> dict:
        return {"path": self.path, "label": self.label, "top": [{"class": c, "probability": p} for c, p in self.top]}


def predict_logits(
    model: GraftModel,
    samples: Sequence[Sample],
    config: DataConfig,
    *,
    runtime: Runtime,
) -> np.ndarray:
    """Logits for each sample's image, in eval mode: batches of `runtime.batch_size`, in its precision."""
    device = runtime.device
    dataset = ImageDataset(samples, eval_transform(config, pixels=True))  # the backbone normalises the batch
    loader = DataLoader(dataset, batch_size=runtime.batch_size, num_workers=runtime.workers)
    was_training = model.training
    # Convert outside inference mode: parameters re-created inside it could never train again.
    model.eval().to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    outputs = []
    with torch.inference_mode():
        for images, _ in loader:
            images = images.to(device=device, memory_format=torch.channels_last)
            with runtime.autocast(device):
                outputs.append(model(images).float().cpu())
    model.train(was_training)
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, len(model.head.state_dict())))


class Classifier:
    """A grafted model plus everything needed to use it: class names, preprocessing, provenance.

    `runtime`: the machine settings `predict` and `evaluate` run with (graft.train hands over its
    own); None resolves this machine's defaults at each call.
    """

    def __init__(self, model: GraftModel, classes: list[str], record: RunRecord | None = None,
                 runtime: Runtime | None = None):
        self.model = model
        self.classes = list(classes)
        self.record = record  # how the model was made (graft.json); None for a model graft did not train
        self.runtime = runtime

    @property
    def data_config(self) -> DataConfig:
        return self.model.backbone.data_config

    @property
    def precision(self) -> str:
        """fp32 where training found bf16 changes answers; else the fastest this machine has."""
        return self.record.inference_precision if self.record is not None else "auto"

    def _runtime(self, batch_size: int) -> Runtime:
        """The runtime to predict with: fp32 wherever `precision` says so, whatever the runtime held."""
        runtime = self.runtime or Runtime.resolve(precision=self.precision, batch_size=batch_size)
        return runtime.but(batch_size=batch_size, **({"precision": "32"} if self.precision == "32" else {}))

    def predict(self, images: Sequence[str | Path], *, top_k: int = 5, batch_size: int = 64) -> list[Prediction]:
        """Top-k classes with probabilities for each image file."""
        samples = [Sample(Path(p), -1) for p in images]
        logits = predict_logits(self.model, samples, self.data_config, runtime=self._runtime(batch_size))
        probabilities = torch.from_numpy(logits).softmax(dim=-1)
        k = max(1, min(top_k, len(self.classes)))
        top = probabilities.topk(k, dim=-1)
        return [
            Prediction(str(path), [(self.classes[int(i)], float(p)) for p, i in zip(values, indices)])
            for path, values, indices in zip(images, top.values, top.indices)
        ]

    def evaluate(self, data: str | Path, *, batch_size: int = 64) -> Evaluation:
        """Accuracy, per-class metrics and confusion matrix on a folder or CSV of labelled images."""
        samples, _skipped = find_eval_data(data, self.classes)
        logits = predict_logits(self.model, samples, self.data_config, runtime=self._runtime(batch_size))
        return evaluate_predictions([s.label for s in samples], logits.argmax(axis=1), self.classes)

    def export(self, out: str | Path, *, format: str = "onnx", check_images: Sequence[str | Path] | None = None,
               log=print):
        """The whole classifier as one file another program runs alone (normalisation inside, class names
        and preprocessing in its metadata), checked against this model on real images first."""
        from .export.onnx import FORMATS, export_onnx

        if format not in FORMATS:
            raise GraftError(f"--format {format!r}: choose one of {', '.join(FORMATS)}.")
        return export_onnx(self, out, check_images=[Path(p) for p in check_images] if check_images else None, log=log)

    def save(self, folder: str | Path) -> Path:
        if self.record is None:
            raise GraftError("This model has no run record (graft did not train it), so it cannot be saved as a graft model.")
        return save_model(self.model, self.record, folder)


def load(path: str | Path) -> Classifier:
    """Load a model saved by graft (a run folder or a folder with model.safetensors + graft.json)."""
    record, state, folder = read_model_files(path)
    backbone = create_backbone(
        record.backbone,
        weights="none",  # the saved file holds every weight; nothing is downloaded
        cut=record.cut,
        img_size=record.data_config.input_size[-1],
    )
    backbone.data_config = record.data_config
    head = create_head(backbone.num_features, len(record.classes), HeadConfig(**record.head))
    model = GraftModel(backbone, head)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:  # graft.json and the weights describe different networks
        first = str(error).strip().splitlines()[0]
        raise ModelFileError(f"{folder}: {WEIGHTS_FILE} does not fit the network {META_FILE} describes "
                             f"({record.backbone}, {len(record.classes)} classes): {first}") from None
    model.eval()
    return Classifier(model, record.classes, record)
