"""A trained graft model as users hold it: classes, preprocessing, `predict` and `evaluate`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .backbones import DataConfig, create_backbone
from .data.dataset import ImageDataset
from .data.discover import Sample, find_eval_data
from .data.transforms import eval_transform
from .evaluation import Evaluation, evaluate_predictions
from .export import read_model_files, save_model
from .features.extract import autocast_context
from .heads import HeadConfig, create_head
from .model import GraftModel
from .runtime import accelerator_device, default_workers


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
    batch_size: int = 64,
    workers: int | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """Logits for each sample's image, batched, in eval mode."""
    device = accelerator_device()
    dataset = ImageDataset(samples, eval_transform(config, pixels=True))  # the backbone normalises the batch
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=default_workers() if workers is None else workers)
    was_training = model.training
    # Convert outside inference mode: parameters re-created inside it could never train again.
    model.eval().to(device=device, memory_format=torch.channels_last)
    outputs = []
    with torch.inference_mode():
        for images, _ in loader:
            images = images.to(device=device, memory_format=torch.channels_last)
            with autocast_context(precision, device):
                outputs.append(model(images).float().cpu())
    model.train(was_training)
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, len(model.head.state_dict())))


class Classifier:
    """A grafted model plus everything needed to use it: class names, preprocessing, provenance."""

    def __init__(self, model: GraftModel, classes: list[str], meta: dict):
        self.model = model
        self.classes = list(classes)
        self.meta = meta

    @property
    def data_config(self) -> DataConfig:
        return self.model.backbone.data_config

    @property
    def precision(self) -> str:
        """fp32 where training found bf16 changes answers; else the fastest this machine has."""
        return self.meta.get("inference_precision", "auto")

    def predict(self, images: Sequence[str | Path], *, top_k: int = 5, batch_size: int = 64) -> list[Prediction]:
        """Top-k classes with probabilities for each image file."""
        samples = [Sample(Path(p), -1) for p in images]
        logits = predict_logits(self.model, samples, self.data_config, batch_size=batch_size, precision=self.precision)
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
        logits = predict_logits(self.model, samples, self.data_config, batch_size=batch_size, precision=self.precision)
        return evaluate_predictions([s.label for s in samples], logits.argmax(axis=1), self.classes)

    def save(self, folder: str | Path) -> Path:
        return save_model(self.model, {**self.meta, "classes": self.classes}, folder)


def load(path: str | Path) -> Classifier:
    """Load a model saved by graft (a run folder or a folder with model.safetensors + graft.json)."""
    meta, state, _folder = read_model_files(path)
    backbone = create_backbone(
        meta["backbone"],
        weights="none",  # the saved file holds every weight; nothing is downloaded
        cut=meta.get("cut"),
        img_size=meta["data_config"]["input_size"][-1],
    )
    backbone.data_config = DataConfig.from_dict(meta["data_config"])
    head = create_head(backbone.num_features, len(meta["classes"]), HeadConfig(**meta.get("head", {})))
    model = GraftModel(backbone, head)
    model.load_state_dict(state, strict=True)
    model.eval()
    return Classifier(model, meta["classes"], meta)
