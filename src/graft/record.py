"""The run record, typed: what graft.json and metrics.json hold, written and read in one place.

- `RunRecord` (graft.json): what the model is and how it was made: backbone, weights, cut,
  preprocessing, classes, the strategy that trained it, the whole `TrainConfig`, the advice of
  `--strategy auto`, the headline accuracies, the data it saw, library versions. With
  model.safetensors it is everything `graft.load` needs.
- `RunMetrics` (metrics.json): what the run measured: evaluations, per-epoch history, timings,
  parameter counts, the logistic regression's C.

Both are versioned (`RECORD_VERSION`); `from_dict` reads what `to_dict` wrote and refuses anything
else with a message naming the file and the key. graft 0.1's version-1 records are upgraded.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .data.config import DataConfig
from .errors import GraftError, ModelFileError
from .evaluation import Evaluation, MultiLabelEvaluation, evaluation_from_dict

RECORD_VERSION = 2
RECORD_FILE = "graft.json"
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class DataSummary:
    source: str  # the folder or CSV the run read
    counts: dict[str, int]  # images per split


@dataclass(frozen=True)
class RunRecord:
    backbone: str
    weights: str  # where the starting weights came from, in words
    cut: int | None  # the backbone was cut after this stage (truncate), else None
    data_config: DataConfig  # preprocessing: size, mean/std, interpolation, crop
    classes: list[str]
    strategy: str  # the strategy that trained (what `auto` chose, never "auto")
    config: TrainConfig  # every option as the run used it
    # what every forward pass of the model computes in: "32", or "bf16" where --precision bf16 was asked
    # ("auto" in records from before graft fixed inference at fp32)
    inference_precision: str = "auto"
    # what computed the run's frozen features and its val and test scores: "torch", "onnxruntime" or
    # "openvino" (graft.engines; None in records from before it was kept)
    engine: str | None = None
    task: str = "single"  # "single" (one class per image) or "multilabel" (several labels: sigmoid outputs)
    thresholds: dict | None = None  # multi-label: each class's decision threshold (graft.evaluation.Thresholds)
    # runs with a pretrained backbone (single- and multi-label): the score of unknown images and its threshold
    # (graft.unknown.UnknownScore.to_dict; its arrays in unknown.safetensors); None in older records
    unknown: dict | None = None
    advice: dict | None = None  # why --strategy auto chose this (graft.advise's Advice.to_dict())
    accuracy: dict[str, float] = field(default_factory=dict)  # split -> its primary figure (accuracy; multi-label: mAP)
    data: DataSummary | None = None
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["data_config"] = self.data_config.to_dict()
        record["config"] = self.config.to_dict()
        return record

    @classmethod
    def from_dict(cls, data: Any, *, source: str = RECORD_FILE) -> RunRecord:
        if not isinstance(data, dict):
            raise ModelFileError(f"{source}: expected a JSON object, found {type(data).__name__}.")
        version = data.get("format_version")
        if version == 1:
            data = _upgrade_v1(data)
        elif version != RECORD_VERSION:
            raise ModelFileError(f"{source}: format version {version!r}; this graft reads versions 1 and {RECORD_VERSION}.")
        known = {spec.name for spec in dataclasses.fields(cls)}
        missing = [spec.name for spec in dataclasses.fields(cls)
                   if spec.name not in data and spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING]
        if missing:
            raise ModelFileError(f"{source}: missing {', '.join(missing)}; the record is damaged or was edited.")
        values = {key: value for key, value in data.items() if key in known}
        try:
            values["data_config"] = DataConfig.from_dict(values["data_config"])
            values["config"] = TrainConfig.from_dict(values["config"], source=f"{source}: config")
            if values.get("data") is not None:
                values["data"] = DataSummary(**values["data"])
        except GraftError as error:
            raise ModelFileError(str(error)) from None
        except (TypeError, KeyError, ValueError) as error:
            raise ModelFileError(f"{source}: a field has the wrong shape ({error}); the record is damaged or was edited.") from None
        record = cls(**values)
        record.check(source)
        return record

    def check(self, source: str = RECORD_FILE) -> None:
        """The fields a model is rebuilt from hold values of the right kind."""
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ModelFileError(f"{source}: backbone must be a timm model name, found {self.backbone!r}.")
        if (not isinstance(self.classes, list) or len(self.classes) < 2
                or not all(isinstance(name, str) and name for name in self.classes)):
            raise ModelFileError(f"{source}: classes must be a list of at least 2 class names.")
        if len(set(self.classes)) != len(self.classes):
            raise ModelFileError(f"{source}: classes has repeated names.")
        if self.cut is not None and (isinstance(self.cut, bool) or not isinstance(self.cut, int)):
            raise ModelFileError(f"{source}: cut must be a stage number or null, found {self.cut!r}.")

    @property
    def head(self) -> dict[str, Any]:
        """The head's shape (graft.heads.HeadConfig keywords), from the config."""
        return {"hidden": self.config.strategy.hidden, "dropout": self.config.strategy.dropout}


@dataclass(frozen=True)
class EpochRow:
    """One epoch of one phase ("head" on cached features, "images" on images)."""

    phase: str
    epoch: int  # counted from 1
    train_loss: float | None
    train_acc: float | None
    val_loss: float | None
    val_acc: float | None
    lr: float | None
    epoch_time_s: float | None
    val_map: float | None = None  # multi-label data: the val mean average precision (what picks the best epoch)


@dataclass(frozen=True)
class ParamCounts:
    total: int
    trainable: int  # trainable in the saved model as it stands
    frozen: int
    trained: int  # trained at some point of the run (head, plus the stages the image phase trained)


@dataclass(frozen=True)
class RunMetrics:
    evaluations: dict[str, Evaluation | MultiLabelEvaluation]  # "val", and "test" when the data has a test split
    history: list[EpochRow]
    timings: dict[str, float]  # features_s, audit_s, head_s, images_s, total_s, report_s
    params: ParamCounts
    logreg_c: float | None = None  # the logistic regression's C (linear-probe)
    format_version: int = RECORD_VERSION

    @property
    def val(self) -> Evaluation | MultiLabelEvaluation:
        return self.evaluations["val"]

    @property
    def test(self) -> Evaluation | MultiLabelEvaluation | None:
        return self.evaluations.get("test")

    @property
    def val_accuracy(self) -> float:
        """The val split's primary figure: accuracy, or for multi-label data the macro mAP."""
        return primary(self.val)

    @property
    def test_accuracy(self) -> float | None:
        return None if self.test is None else primary(self.test)

    def accuracies(self) -> dict[str, float]:
        return {split: primary(evaluation) for split, evaluation in self.evaluations.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            **{f"{split}_accuracy": accuracy for split, accuracy in self.accuracies().items()},
            "evaluations": {split: evaluation.to_dict() for split, evaluation in self.evaluations.items()},
            "history": [asdict(row) for row in self.history],
            "timings": dict(self.timings),
            "params": asdict(self.params),
            "logreg_c": self.logreg_c,
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = METRICS_FILE) -> RunMetrics:
        try:
            if data.get("format_version") != RECORD_VERSION:
                raise ModelFileError(f"{source}: format version {data.get('format_version')!r}; "
                                     f"this graft reads version {RECORD_VERSION}.")
            return cls(
                evaluations={split: evaluation_from_dict(e) for split, e in data["evaluations"].items()},
                history=[EpochRow(**row) for row in data["history"]],
                timings={key: float(value) for key, value in data["timings"].items()},
                params=ParamCounts(**data["params"]),
                logreg_c=data.get("logreg_c"),
            )
        except (AttributeError, TypeError, KeyError, ValueError) as error:
            raise ModelFileError(f"{source}: a field is missing or has the wrong shape ({error}).") from None


def primary(evaluation: Evaluation | MultiLabelEvaluation) -> float:
    """A split's primary figure, what runs are ranked by: accuracy; for multi-label data the macro mean
    average precision (0 where no class has a positive image to measure it on)."""
    if isinstance(evaluation, MultiLabelEvaluation):
        return evaluation.map_macro or 0.0
    return evaluation.accuracy


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{path}: not valid JSON ({error}); the file is damaged.") from None


def read_config(path: str | Path) -> tuple[TrainConfig, str | None]:
    """The config of a run record (graft.json) or of a JSON of config groups, and the data the run
    read (None for a bare config): what `graft train --config` replays."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORD_FILE
    data = read_json(path)
    if isinstance(data, dict) and "format_version" in data:
        record = RunRecord.from_dict(data, source=str(path))
        return record.config, record.data.source if record.data else None
    return TrainConfig.from_dict(data, source=str(path)), None


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for package in ("graft", "torch", "torchvision", "timm", "lightning", "scikit-learn", "safetensors"):
        try:
            packages[package] = version(package)
        except PackageNotFoundError:  # a missing distribution just isn't recorded
            continue
    return packages | {"python": platform.python_version()}


def _upgrade_v1(data: dict) -> dict:
    """graft 0.1 (format 1) kept options in `hyperparameters` and the head shape in `head`."""
    hyper = dict(data.get("hyperparameters") or {})
    augment = hyper.pop("augment", None)
    options = {key: value for key, value in hyper.items() if key in _flat_names() and value is not None}
    if augment is None:
        options["augment"] = False
    else:
        options.update(crop_scale=augment["scale"][0], hflip=augment["hflip"], color_jitter=augment["color_jitter"])
    head = data.get("head") or {}
    options.update(hidden=head.get("hidden"), dropout=head.get("dropout", 0.0))
    options.update(strategy=data.get("strategy", "finetune"), backbone=data.get("backbone", ""))
    try:
        config = TrainConfig.from_options(**options).to_dict()
    except GraftError:
        config = TrainConfig().replace(backbone=data.get("backbone", "")).to_dict()
    return {**data, "config": config, "accuracy": {k.removesuffix("_accuracy"): v for k, v in (data.get("metrics") or {}).items()},
            "format_version": RECORD_VERSION}


def _flat_names() -> set[str]:
    from .config import option_groups

    return set(option_groups())
