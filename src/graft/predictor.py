"""One predictor for every model file graft writes: the `Predictor` protocol and its one implementation.

A run folder (graft.classifier.Classifier, torch), an ONNX export (graft.export.exported, ONNX
Runtime, no torch), an OpenVINO IR and a TorchScript archive (graft.export.loaded) all predict
through `BatchPredictor` here; each only says how a batch of prepared pixels (uint8,
N x 3 x H x W) becomes class probabilities (`probabilities`). Everything else is done once, here:
- each image is decoded as graft.data.inputs reads any input (paths, PIL images, arrays, bytes; a big
  JPEG at a reduced scale still covering the input) and prepared by graft.data.prepare, so the same
  image is the same pixels whatever the model file;
- images are read one batch at a time, the next batch in a thread while the model runs this one
  (Pillow and every engine here release the GIL while they work), so memory stays bounded and the
  reader holds up the model as little as possible (docs/benchmarks.md, "Batch prediction");
- an input that cannot be read is an answer with `error` set, in input order, never a crash;
- `tta`: the mean of the image's and its mirror image's probabilities; top-k by probability;
- a multi-label model (`task` "multilabel": a sigmoid per class) answers, besides the top-k, every
  class's probability and the labels whose probability reaches their threshold (the ones chosen on
  val and saved with the model, or one `threshold` for every class), decided by
  graft.evaluation.decide, the one rule;
- a model with a score of unknown images (graft.unknown, `unknown`: kept with a run, single- or
  multi-label) scores each image's embedding (the backbone's pooled features, computed in the same
  pass as the probabilities: `probabilities_and_features`) and answers `unknown` over its threshold;
- `evaluate`: a folder or label file of labelled images (graft.data.find_eval_data) scored by
  graft.evaluation (a multi-label model: graft.evaluation.evaluate_multilabel at its thresholds).

The module imports neither torch nor timm (`graft predict model.onnx` runs without them).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from .data.config import DataConfig
from .data.images import eval_draft_size
from .data.inputs import ImageInput, as_input_list, input_name, to_rgb_image
from .data.prepare import prepare_image
from .errors import BadImageError, GraftError, ModelFileError
from .prediction import Prediction, in_input_order

if TYPE_CHECKING:
    from PIL import Image

    from .data.discover import Sample
    from .evaluation import Evaluation, MultiLabelEvaluation
    from .record import RunRecord
    from .unknown import UnknownScore

METADATA_VERSION = 1
TASKS = ("single", "multilabel")  # one class per image (softmax), or several labels per image (a sigmoid each)


@runtime_checkable
class Predictor(Protocol):
    """What `graft.load` returns for any model file: a run folder, a .onnx, an OpenVINO .xml or a
    TorchScript .pt. `metadata` is the description every export carries (classes, input size and
    preprocessing, backbone, strategy, val accuracy, task and thresholds); `engine` and `precision`
    say what computes; `task` is "single" or "multilabel" (several labels per image)."""

    classes: list[str]
    engine: str
    task: str

    @property
    def metadata(self) -> dict[str, Any]: ...

    def predict(self, images: ImageInput | Iterable[ImageInput], *, top_k: int = 5, batch_size: int = 64,
                tta: bool = False, threshold: float | None = None) -> list[Prediction]: ...

    def predict_iter(self, images: Sequence[ImageInput], *, top_k: int = 5, batch_size: int = 64,
                     tta: bool = False, threshold: float | None = None) -> Iterator[Prediction]: ...

    def evaluate(self, data: str | Path, *, batch_size: int = 64, tta: bool = False,
                 threshold: float | None = None) -> Evaluation | MultiLabelEvaluation: ...


class BatchPredictor:
    """The shared implementation of `Predictor`. A subclass sets `classes`, `engine` (and `precision`
    where it is not fp32; `task` and `thresholds` for a multi-label model), gives `data_config` and
    `metadata`, and implements `probabilities`."""

    classes: list[str]
    engine: str = ""
    precision: str = "32"
    task: str = "single"
    thresholds: np.ndarray | None = None  # multi-label: each class's threshold, in class order (None: 0.5 each)
    unknown: UnknownScore | None = None  # the score of unknown images kept with the model (None: no score)

    @property
    def data_config(self) -> DataConfig:
        raise NotImplementedError

    @property
    def metadata(self) -> dict[str, Any]:
        raise NotImplementedError

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities (float32, N x classes) for prepared uint8 pixels (N x 3 x H x W): a
        softmax over the classes, or for a multi-label model each class's sigmoid."""
        raise NotImplementedError

    def probabilities_and_features(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """`probabilities` and, from the same pass, the backbone's pooled features (N x D), or None
        where this model file does not give them (then `unknown` cannot be scored)."""
        return self.probabilities(pixels), None

    def judged(self, pixels: np.ndarray, *, tta: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """`scores` and each image's score of unknown images (float64, N; None for a model without
        one). With `tta` the probabilities are the mean of the image's and its mirror image's; the
        unknown score is the image's own."""
        if self.unknown is None:
            return self.scores(pixels, tta=tta), None
        probabilities, unknown = self.probabilities_and_unknown(pixels)
        probabilities = np.asarray(probabilities, dtype=np.float32)
        if tta:
            mirrored = np.asarray(self.probabilities(np.ascontiguousarray(pixels[..., ::-1])), dtype=np.float32)
            probabilities = ((probabilities + mirrored) / 2).astype(np.float32)
        return probabilities, unknown

    def probabilities_and_unknown(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`probabilities` and each image's score of unknown images (float64, N) from the same pass: the
        model's `unknown` score of the pooled features (`probabilities_and_features`); a model file that
        computes the score itself gives it instead. ModelFileError where neither can be had."""
        assert self.unknown is not None
        probabilities, features = self.probabilities_and_features(pixels)
        if features is None:
            raise ModelFileError(f"This {self.engine} model does not give the image embeddings its score of unknown "
                                 "images needs; predict with the run folder.")
        return probabilities, self.unknown.score(features)

    @property
    def multilabel(self) -> bool:
        """Whether the model gives several labels per image (a sigmoid per class, decided at thresholds)."""
        return self.task == "multilabel"

    def decision_thresholds(self, threshold: float | None = None) -> np.ndarray:
        """Each class's threshold (float64, in class order) for a multi-label model: `threshold` for
        every class where given (--threshold), else the model's own (chosen on val), else 0.5 each.
        GraftError for a threshold given to a single-label model, or one that is not a probability."""
        from .evaluation.thresholds import DEFAULT_THRESHOLD, check_threshold

        if not self.multilabel:
            if threshold is not None:
                raise GraftError(f"--threshold {threshold}: thresholds decide the labels of a multi-label model "
                                 "(several labels per image); this model gives each image its one most likely class. "
                                 "Leave --threshold out.")
            raise ValueError("a single-label model has no decision thresholds")
        if threshold is not None:
            return np.full(len(self.classes), check_threshold(threshold), dtype=np.float64)
        if self.thresholds is None:
            return np.full(len(self.classes), DEFAULT_THRESHOLD, dtype=np.float64)
        return np.asarray(self.thresholds, dtype=np.float64)

    # -- One image -----------------------------------------------------------------------------------

    @property
    def draft_size(self) -> tuple[int, int]:
        """How small a big JPEG may be decoded (graft.data.images.load_image), as for the run's features."""
        return eval_draft_size(self.data_config.image_size)

    def prepare(self, image: Image.Image) -> np.ndarray:
        """A decoded RGB picture as the model's input (graft.data.prepare.prepare_image)."""
        return prepare_image(image, self.data_config)

    def read(self, item: ImageInput, index: int = 0) -> np.ndarray:
        """Any input (graft.data.inputs.ImageInput) decoded and prepared; BadImageError when unreadable."""
        return self.prepare(to_rgb_image(item, input_name(item, index), draft_size=self.draft_size))

    # -- Batches -------------------------------------------------------------------------------------

    def predict(self, images: ImageInput | Iterable[ImageInput], *, top_k: int = 5, batch_size: int = 64,
                tta: bool = False, threshold: float | None = None) -> list[Prediction]:
        """Top-k classes with probabilities for each image; always a list, even for one image. A
        multi-label model's answers also hold `labels` (the classes at or over their thresholds, most
        likely first) and every class's probability (`probabilities`).

        `images`: one image or a list of them, each a file path (str or Path), a PIL image, a uint8
        numpy array (H x W x 3 RGB or H x W grey; an N x H x W x 3 array is N images) or the bytes of
        an encoded image file. In a list, an input that cannot be read gives a Prediction with
        `error` set and no `top`; a single unreadable image raises `BadImageError`.
        `tta`: average the probabilities of each image and its horizontal mirror image.
        `threshold`: a multi-label model's threshold for every class, instead of its own.
        """
        items, single = as_input_list(images)
        predictions = list(self.predict_iter(items, top_k=top_k, batch_size=batch_size, tta=tta, threshold=threshold))
        if single and predictions[0].error is not None:
            raise BadImageError(predictions[0].path, predictions[0].error)
        return predictions

    def predict_iter(self, images: Sequence[ImageInput], *, top_k: int = 5, batch_size: int = 64,
                     tta: bool = False, threshold: float | None = None) -> Iterator[Prediction]:
        """`predict`, one Prediction at a time in input order, reading one batch of images at a time."""
        k = max(1, min(top_k, len(self.classes)))
        thresholds = self.decision_thresholds(threshold) if self.multilabel or threshold is not None else None
        for chunk, probabilities, errors, unknown in self.scored(images, batch_size=batch_size, tta=tta):
            yield from in_input_order(images, chunk, errors,
                                      self.answers(probabilities, k, thresholds=thresholds, unknown=unknown))

    def answers(self, probabilities: np.ndarray | None, k: int, *, thresholds: np.ndarray | None = None,
                unknown: np.ndarray | None = None) -> list[Prediction]:
        """The answer of each row of `probabilities` (its path still empty): the `k` most likely
        classes; for a multi-label model also its labels, decided at `thresholds` (default:
        `decision_thresholds()`), most likely first, and every class's probability. `unknown`: each
        row's score of unknown images (`judged`), answered unknown over the model's threshold (a
        multi-label answer keeps its labels beside it)."""
        tops = self.top(probabilities, k)
        judged: list[dict[str, Any]] = [{} for _ in tops]
        if unknown is not None and self.unknown is not None:
            threshold, count = self.unknown.threshold, len(self.classes)
            judged = [dict(unknown=bool(value > threshold), unknown_score=float(value), known_classes=count)
                      for value in unknown]
        if probabilities is None or not self.multilabel:
            return [Prediction("", top, **extra) for top, extra in zip(tops, judged)]
        from .evaluation.thresholds import decide

        given = decide(probabilities, self.decision_thresholds() if thresholds is None else thresholds)
        return [Prediction("", top, labels=[self.classes[c] for c in np.argsort(-row, kind="stable") if given[i, c]],
                           probabilities={name: float(p) for name, p in zip(self.classes, row)}, **extra)
                for i, (row, top, extra) in enumerate(zip(probabilities, tops, judged))]

    def scored(self, images: Sequence[ImageInput], *, batch_size: int = 64,
               tta: bool = False) -> Iterator[tuple[range, np.ndarray | None, dict[int, str], np.ndarray | None]]:
        """For each batch of `images`: its indices, the probabilities of its readable images (None
        when there is none), the reasons of the others by index, and the readable images' scores of
        unknown images (None for a model without one; `judged`). The next batch is read in a thread
        while this one runs."""
        if batch_size < 1:
            raise GraftError(f"--batch-size {batch_size}: use 1 or more.")
        chunks = [range(start, min(start + batch_size, len(images))) for start in range(0, len(images), batch_size)]
        if not chunks:
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="graft-read") as reader:
            pending = reader.submit(self.read_batch, images, chunks[0])
            for number, chunk in enumerate(chunks):
                batch, errors = pending.result()
                if number + 1 < len(chunks):
                    pending = reader.submit(self.read_batch, images, chunks[number + 1])
                probabilities, unknown = self.judged(batch, tta=tta) if batch is not None else (None, None)
                yield chunk, probabilities, errors, unknown

    def read_batch(self, images: Sequence[ImageInput], chunk: range) -> tuple[np.ndarray | None, dict[int, str]]:
        """The readable images of `chunk` as one uint8 batch (None when there is none), and the errors by index."""
        ready, errors = [], {}
        for index in chunk:
            try:
                ready.append(self.read(images[index], index))
            except BadImageError as error:
                errors[index] = error.reason
        return (np.stack(ready) if ready else None), errors

    def scores(self, pixels: np.ndarray, *, tta: bool = False) -> np.ndarray:
        """`probabilities`, or with `tta` the mean of the batch's and its mirror images'."""
        probabilities = np.asarray(self.probabilities(pixels), dtype=np.float32)
        if not tta:
            return probabilities
        mirrored = np.asarray(self.probabilities(np.ascontiguousarray(pixels[..., ::-1])), dtype=np.float32)
        return ((probabilities + mirrored) / 2).astype(np.float32)

    def top(self, probabilities: np.ndarray | None, k: int) -> list[list[tuple[str, float]]]:
        """The `k` most likely (class, probability) of each row, most likely first (ties: lower index)."""
        if probabilities is None:
            return []
        return [[(self.classes[c], float(row[c])) for c in np.argsort(-row, kind="stable")[:k]] for row in probabilities]

    # -- Labelled images -----------------------------------------------------------------------------

    def evaluate(self, data: str | Path, *, batch_size: int = 64, tta: bool = False,
                 threshold: float | None = None) -> Evaluation | MultiLabelEvaluation:
        """Accuracy, per-class metrics and confusion matrix on a folder or CSV of labelled images
        (a folder of class folders, a split folder whose test/ or val/ is used, or a label file); for
        a multi-label model, a MultiLabelEvaluation (mAP, per-class AP, precision, recall and F1 at
        its thresholds, exact match, Hamming loss) on a label file's images.

        `tta`: judge each image by the mean of its and its mirror image's probabilities.
        `threshold`: a multi-label model's threshold for every class, instead of its own."""
        return self.evaluate_images(data, batch_size=batch_size, tta=tta, threshold=threshold)[0]

    def evaluate_images(self, data: str | Path, *, batch_size: int = 64, tta: bool = False,
                        threshold: float | None = None) -> tuple[Evaluation | MultiLabelEvaluation, list[dict]]:
        """`evaluate`, plus one row per image: path, true class, predicted class, its probability; for
        a multi-label model, path, true labels, predicted labels (graft.prediction.join_labels) and
        each class's probability (probability_CLASS); then, for a model with a score of unknown
        images, unknown ("true" or "false") and unknown_score (`evaluation_columns`)."""
        from .data.discover import find_eval_data

        thresholds = self.decision_thresholds(threshold) if self.multilabel or threshold is not None else None
        samples, _skipped = find_eval_data(data, self.classes, task=self.task)
        probabilities, unknown = self.judged_of([sample.path for sample in samples], batch_size=batch_size, tta=tta)
        evaluation = self.evaluation_of(samples, probabilities, thresholds=thresholds)
        if self.multilabel:
            from .prediction import join_labels

            answers = self.answers(probabilities, 1, thresholds=thresholds)
            rows = [{"path": str(sample.path),
                     "true": join_labels([self.classes[c] for c in sample.labels], self.classes),
                     "predicted": join_labels(answer.labels or [], self.classes),
                     **{f"probability_{name}": p for name, p in (answer.probabilities or {}).items()}}
                    for sample, answer in zip(samples, answers)]
        else:
            predicted = probabilities.argmax(axis=1)
            rows = [{"path": str(sample.path), "true": self.classes[sample.label],
                     "predicted": self.classes[int(guess)], "probability": float(probabilities[row, int(guess)])}
                    for row, (sample, guess) in enumerate(zip(samples, predicted))]
        if unknown is not None and self.unknown is not None:  # a model with a score of unknown images
            for row, value in zip(rows, unknown):
                row.update(unknown="true" if value > self.unknown.threshold else "false", unknown_score=float(value))
        return evaluation, rows

    def evaluation_columns(self) -> list[str]:
        """The columns of `evaluate_images`' rows (graft evaluate's per-image CSV); a model with a
        score of unknown images adds unknown and unknown_score."""
        scored = ["path", "true", "predicted",
                  *((f"probability_{name}" for name in self.classes) if self.multilabel else ["probability"])]
        return [*scored, *(["unknown", "unknown_score"] if self.unknown is not None else [])]

    def evaluate_samples(self, samples: Sequence[Sample], *, batch_size: int = 64, tta: bool = False,
                         thresholds: np.ndarray | None = None) -> tuple[Evaluation | MultiLabelEvaluation, np.ndarray]:
        """The evaluation of labelled samples (graft.data.discover.Sample), and their probabilities
        (N x classes). An image that cannot be read raises BadImageError: labelled data was checked.
        A multi-label model's is decided at `thresholds` (default: `decision_thresholds()`)."""
        probabilities = self.probabilities_of([sample.path for sample in samples], batch_size=batch_size, tta=tta)
        return self.evaluation_of(samples, probabilities, thresholds=thresholds), probabilities

    def evaluation_of(self, samples: Sequence[Sample], probabilities: np.ndarray, *,
                      thresholds: np.ndarray | None = None) -> Evaluation | MultiLabelEvaluation:
        """The evaluation of labelled samples from their `probabilities` (`evaluate_samples`)."""
        if self.multilabel:
            from .data.discover import sample_targets
            from .evaluation import evaluate_multilabel

            targets = sample_targets(list(samples), len(self.classes), "multilabel")
            values = self.decision_thresholds() if thresholds is None else thresholds
            return evaluate_multilabel(targets, probabilities, classes=self.classes, thresholds=values)
        from .evaluation import evaluate_predictions

        return evaluate_predictions([s.label for s in samples], probabilities.argmax(axis=1), self.classes)

    def probabilities_of(self, images: Sequence[ImageInput], *, batch_size: int = 64, tta: bool = False) -> np.ndarray:
        """The probabilities (N x classes, float32) of images that must all be readable."""
        return self.judged_of(images, batch_size=batch_size, tta=tta)[0]

    def judged_of(self, images: Sequence[ImageInput], *, batch_size: int = 64,
                  tta: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """The probabilities (N x classes, float32) of images that must all be readable, and their scores
        of unknown images (N; None for a model without one)."""
        rows: list[np.ndarray] = []
        scores: list[np.ndarray] = []
        for _, probabilities, errors, unknown in self.scored(images, batch_size=batch_size, tta=tta):
            if errors or probabilities is None:
                index = min(errors)
                raise BadImageError(input_name(images[index], index), errors[index])
            rows.append(probabilities)
            if unknown is not None:
                scores.append(unknown)
        if not rows:
            return np.zeros((0, len(self.classes)), dtype=np.float32), (np.zeros(0) if self.unknown else None)
        return np.concatenate(rows), (np.concatenate(scores) if self.unknown is not None else None)


class FilePredictor(BatchPredictor):
    """A model file that carries its own metadata (`model_metadata`: every `graft export` format):
    the classes and preprocessing come from it."""

    path: Path
    _metadata: dict[str, Any]
    _config: DataConfig

    def read_metadata(self, info: dict[str, Any]) -> None:
        """Take the classes, the preprocessing and (multi-label) the thresholds from the file's
        metadata; ModelFileError if it is not graft's."""
        self._metadata = info
        self.classes, self._config = config_from_metadata(info, self.path)
        self.task, self.thresholds = task_from_metadata(info, self.classes, self.path)

    @property
    def data_config(self) -> DataConfig:
        return self._config

    @property
    def metadata(self) -> dict[str, Any]:
        return self._metadata


# -- What every model file says about itself ------------------------------------------------------------


def model_metadata(classes: Sequence[str], config: DataConfig, record: RunRecord | None, *,
                   format: str = "graft-run", task: str | None = None,
                   thresholds: np.ndarray | None = None, unknown: UnknownScore | None = None) -> dict[str, Any]:
    """What a program needs to feed a model and read its answers: what every export carries (in the
    file and in the JSON beside it) and what every predictor's `metadata` says. `task` and
    `thresholds` default to the record's: "multilabel" models answer a sigmoid per class
    ("probabilities"), an image having each class whose probability is >= its threshold. `unknown`:
    a score of unknown images the model file computes (output "unknown_score", graft.export.unknown_graph):
    its record (graft.unknown.UnknownScore.to_dict) and the rule."""
    task = task or (record.task if record is not None else "single")
    if task == "multilabel" and thresholds is None and record is not None:
        thresholds = record_thresholds(record)
    return {
        "format": format,
        "version": METADATA_VERSION,
        "classes": list(classes),
        "input": {
            "name": "pixels",
            "dtype": "uint8",
            "layout": "NCHW, RGB",
            "size": list(config.input_size),
            "preprocessing": (f"resize the short side to {int(config.image_size / config.crop_pct)} px "
                              f"({config.interpolation}), then crop the centre {config.image_size} x "
                              f"{config.image_size}; images smaller than that are resized whole to it "
                              f"(crop mode {config.crop_mode}: graft.data.prepare). Normalisation is inside the model."),
            "interpolation": config.interpolation,
            "crop_pct": config.crop_pct,
            "crop_mode": config.crop_mode,
            "mean": list(config.mean),
            "std": list(config.std),
        },
        "outputs": ["logits", "probabilities", *(["unknown_score"] if unknown is not None else [])],
        "task": task,
        "thresholds": ({name: float(value) for name, value in zip(classes, thresholds)}
                       if task == "multilabel" and thresholds is not None else None),
        "backbone": record.backbone if record else None,
        "strategy": record.strategy if record else None,
        "val_accuracy": record.accuracy.get("val") if record else None,
        **({"unknown": {**unknown.to_dict(), "output": "unknown_score",
                        "rule": "an image is of none of the classes where unknown_score > threshold"}}
           if unknown is not None else {}),
    }


def record_thresholds(record: RunRecord) -> np.ndarray | None:
    """A multi-label run's thresholds (graft.json's, chosen on val) in its class order; None without."""
    if record.thresholds is None:
        return None
    try:
        rows = record.thresholds["per_class"]
        return np.array([float(rows[name]["threshold"]) for name in record.classes], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f"graft.json: thresholds has the wrong shape ({error}); the record is damaged or was "
                             "edited. Train again.") from None


def task_from_metadata(info: dict[str, Any], classes: list[str], path: Path) -> tuple[str, np.ndarray | None]:
    """The task and (multi-label) thresholds a model file's metadata gives: "single" and None where it
    names no task (files written before graft trained multi-label models)."""
    task = info.get("task") or "single"
    if task not in TASKS:
        raise ModelFileError(f"{path}: task {task!r} in its metadata; graft knows {', '.join(TASKS)}. "
                             "Export the model again with this graft.")
    if task == "single":
        return task, None
    given = info.get("thresholds")
    try:
        values = np.array([float(given[name]) for name in classes], dtype=np.float64) if given is not None else None
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: its thresholds do not give one number per class ({error}); "
                             "export the model again with `graft export RUN`.") from None
    return task, values


def config_from_metadata(info: dict[str, Any], path: Path) -> tuple[list[str], DataConfig]:
    """The classes and the preprocessing that a model file's metadata (`model_metadata`) describes."""
    try:
        spec = info["input"]
        config = DataConfig(input_size=tuple(int(v) for v in spec["size"]),  # type: ignore[arg-type]
                            mean=tuple(float(v) for v in spec["mean"]),  # type: ignore[arg-type]
                            std=tuple(float(v) for v in spec["std"]),  # type: ignore[arg-type]
                            interpolation=str(spec["interpolation"]), crop_pct=float(spec["crop_pct"]),
                            crop_mode=str(spec["crop_mode"]))
        classes = [str(name) for name in info["classes"]]
        _check_preparable(config)
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: no graft metadata ({error}); use a model file written by `graft export RUN`.") from None
    return classes, config


def _check_preparable(config: DataConfig) -> None:
    """ValueError when graft.data.prepare cannot prepare images as `config` says."""
    from .data.prepare import CROP_MODES, resample_filter

    resample_filter(config.interpolation)
    if len(config.input_size) != 3 or config.crop_mode not in CROP_MODES or not config.crop_pct > 0:
        raise ValueError(f"input {list(config.input_size)}, crop mode {config.crop_mode!r}, crop_pct {config.crop_pct}")
