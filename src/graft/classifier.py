"""A trained graft model as users hold it: classes, preprocessing, `predict` and `evaluate`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .backbones import create_backbone
from .data.config import DataConfig
from .data.dataset import ImageDataset
from .data.discover import Sample, find_eval_data
from .data.images import eval_draft_size
from .data.inputs import ImageInput, as_input_list, input_name, to_rgb_image
from .data.transforms import eval_transform
from .engines import Forward, frozen_forward
from .errors import BadImageError, GraftError, ModelFileError
from .evaluation import Evaluation, evaluate_predictions
from .export import META_FILE, WEIGHTS_FILE, read_model_files, save_model
from .heads import HeadConfig, create_head
from .model import GraftModel
from .prediction import Prediction, in_input_order
from .record import RunRecord
from .runtime import Runtime


class _InputDataset(Dataset):
    """(index, pixels or None, error or None) per input: a bad input is an answer, not a crash."""

    def __init__(self, items: Sequence[ImageInput], transform, *, draft_size: tuple[int, int]):
        self.items = items
        self.transform = transform
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        try:
            image = to_rgb_image(self.items[index], input_name(self.items[index], index), draft_size=self.draft_size)
        except BadImageError as error:
            return index, None, error.reason
        return index, self.transform(image), None


def _collate_inputs(batch):
    """Indices in order, the readable images stacked (None when there is none), errors by index."""
    indices = [index for index, _, _ in batch]
    pixels = [tensor for _, tensor, _ in batch if tensor is not None]
    errors = {index: error for index, tensor, error in batch if tensor is None}
    return indices, (torch.stack(pixels) if pixels else None), errors


def predict_logits(
    model: GraftModel,
    samples: Sequence[Sample],
    config: DataConfig,
    *,
    runtime: Runtime,
    tta: bool = False,
) -> np.ndarray:
    """Logits for each sample's image, in eval mode: batches of `runtime.batch_size`, in its engine and precision.

    With `tta`, the log of the mean of the image's and its mirror image's probabilities: softmax of
    these is the averaged probabilities, their argmax the averaged answer.
    """
    # the backbone normalises the batch; big JPEGs decode at a reduced scale, as for the run's features
    dataset = ImageDataset(samples, eval_transform(config, pixels=True), draft_size=eval_draft_size(config.image_size))
    loader = DataLoader(dataset, batch_size=runtime.batch_size, num_workers=runtime.workers)
    passes = len(samples) * (2 if tta else 1)
    with frozen_forward(model, runtime=runtime, images=passes, input_size=config.input_size) as forward:
        outputs = [_probabilities(forward, images, tta=True).log() if tta else forward(images) for images, _ in loader]
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, len(model.head.state_dict())))


def _probabilities(forward: Forward, pixels: torch.Tensor, *, tta: bool) -> torch.Tensor:
    """Class probabilities (float32, on the CPU) for a batch of uint8 images; with `tta`, the mean of
    the image's and its horizontal mirror's."""
    probabilities = forward(pixels).softmax(dim=-1)
    if tta:
        probabilities = (probabilities + forward(pixels.flip(-1).contiguous()).softmax(dim=-1)) / 2
    return probabilities


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

    def inference_runtime(self, batch_size: int, engine: str | None = None) -> Runtime:
        """The runtime to predict with: fp32 wherever `precision` says so, whatever the runtime held;
        `engine` (auto, torch, onnxruntime, openvino; graft.engines) when given."""
        runtime = self.runtime or Runtime.resolve(precision=self.precision, batch_size=batch_size)
        return runtime.but(batch_size=batch_size, **({"precision": "32"} if self.precision == "32" else {}),
                           **({"engine": engine} if engine is not None else {}))

    def predict(self, images: ImageInput | Iterable[ImageInput], *, top_k: int = 5, batch_size: int = 64,
                tta: bool = False, engine: str | None = None) -> list[Prediction]:
        """Top-k classes with probabilities for each image; always a list, even for one image.

        `images`: one image or a list of them, each a file path (str or Path), a PIL image, a uint8
        numpy array (H x W x 3 RGB or H x W grey; an N x H x W x 3 array is N images) or the bytes of
        an encoded image file. In a list, an input that cannot be read gives a Prediction with
        `error` set and no `top`; a single unreadable image raises `BadImageError`.
        `tta`: average the probabilities of each image and its horizontal mirror image.
        `engine`: what runs the model (graft.engines; default: the runtime's, auto).
        """
        items, single = as_input_list(images)
        predictions = list(self.predict_iter(items, top_k=top_k, batch_size=batch_size, tta=tta, engine=engine))
        if single and predictions[0].error is not None:
            raise BadImageError(predictions[0].path, predictions[0].error)
        return predictions

    def predict_iter(self, images: Sequence[ImageInput], *, top_k: int = 5, batch_size: int = 64,
                     tta: bool = False, engine: str | None = None) -> Iterator[Prediction]:
        """`predict`, one Prediction at a time in input order, reading only one batch of images at once."""
        runtime = self.inference_runtime(batch_size, engine)
        loader = DataLoader(_InputDataset(images, eval_transform(self.data_config, pixels=True),
                                          draft_size=eval_draft_size(self.data_config.image_size)),
                            batch_size=runtime.batch_size, num_workers=runtime.workers, collate_fn=_collate_inputs)
        k = max(1, min(top_k, len(self.classes)))
        passes = len(images) * (2 if tta else 1)
        with frozen_forward(self.model, runtime=runtime, images=passes, input_size=self.data_config.input_size) as forward:
            for indices, pixels, errors in loader:
                tops = []
                if pixels is not None:
                    top = _probabilities(forward, pixels, tta=tta).topk(k, dim=-1)
                    tops = [[(self.classes[c], float(p)) for p, c in zip(values, classes)]
                            for values, classes in zip(top.values.tolist(), top.indices.tolist())]
                yield from in_input_order(images, indices, errors, tops)

    def evaluate(self, data: str | Path, *, batch_size: int = 64, engine: str | None = None,
                 tta: bool = False) -> Evaluation:
        """Accuracy, per-class metrics and confusion matrix on a folder or CSV of labelled images.

        `tta`: judge each image by the mean of its and its mirror image's probabilities."""
        return self.evaluate_images(data, batch_size=batch_size, engine=engine, tta=tta)[0]

    def evaluate_images(self, data: str | Path, *, batch_size: int = 64, engine: str | None = None,
                        tta: bool = False) -> tuple[Evaluation, list[dict]]:
        """`evaluate`, plus one row per image: path, true class, predicted class, its probability."""
        samples, _skipped = find_eval_data(data, self.classes)
        logits = predict_logits(self.model, samples, self.data_config, runtime=self.inference_runtime(batch_size, engine), tta=tta)
        predicted = logits.argmax(axis=1) if len(samples) else np.zeros(0, dtype=int)
        probabilities = torch.from_numpy(logits).softmax(dim=-1).numpy() if len(samples) else logits
        rows = [{"path": str(sample.path), "true": self.classes[sample.label], "predicted": self.classes[int(guess)],
                 "probability": float(probabilities[row, int(guess)])}
                for row, (sample, guess) in enumerate(zip(samples, predicted))]
        return evaluate_predictions([s.label for s in samples], predicted, self.classes), rows

    def export(self, out: str | Path, *, format: str = "onnx", check_images: Sequence[str | Path] | None = None,
               log=print):
        """The whole classifier for another program to run alone (normalisation inside, class names and
        preprocessing in its metadata), checked against this model on real images first.

        `format`: "onnx" (out: model.onnx), "openvino" (model.xml, its weights in model.bin beside it;
        needs pip install 'graft[openvino]') or "torchscript" (model.pt; loading it runs TorchScript
        code, so load only archives you trust). Returns graft.export.common.Exported (the file, the
        JSON beside it, the parity figures); raises ExportError when an answer would change."""
        from .export.formats import export

        return export(self, out, format=format, log=log,
                      check_images=[Path(p) for p in check_images] if check_images else None)

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
