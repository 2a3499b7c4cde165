"""What every export format shares: the wrapped model, its metadata, and the parity check.

Each export holds the whole classifier: uint8 RGB pixels in (N x 3 x H x W, N dynamic, already
resized and cropped as the metadata says; normalisation is inside), `logits` and `probabilities`
out (a softmax over the classes; for a multi-label model each class's sigmoid). The class names,
input size, mean/std, interpolation and crop, the task and a multi-label model's thresholds travel
in the file itself and in a JSON file beside it (the export's name + ".json").

Every export is run beside the PyTorch model on real images (the run's own val or test images when
they are still there, else the embedded CIFAR-10 sample): the largest logit difference and the
top-1 agreement (for a multi-label model, the agreement of the label sets decided at its
thresholds) are printed and saved beside the export, and an export that changes any answer is
refused, with nothing left on disk.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from ..data.config import DataConfig
from ..errors import GraftError
from ..model import GraftModel
from ..predictor import model_metadata
from ..record import RunRecord

if TYPE_CHECKING:
    from ..unknown import UnknownScore


class Exportable(Protocol):
    """What an export is made from: a trained model with its classes and record (a
    graft.classifier.Classifier; typed here without importing it, since it imports graft.export)."""

    model: GraftModel
    classes: list[str]
    record: RunRecord | None
    task: str  # "single" or "multilabel"
    thresholds: np.ndarray | None  # a multi-label model's, in class order

    @property
    def data_config(self) -> DataConfig: ...

# The formats `graft export --format` takes, and the file each writes by default in the run folder.
FILE_NAMES = {"onnx": "model.onnx", "openvino": "model.xml", "torchscript": "model.pt"}
FORMATS = tuple(FILE_NAMES)
PARITY_IMAGES = 64  # enough to see a changed answer, few enough for seconds on a CPU
DEMO_DATA = "demo_data/cifar10-sample"
OUTPUTS = ["logits", "probabilities"]


class ExportError(GraftError):
    """An export could not be made, or it would not answer like the model."""


@dataclass(frozen=True)
class Parity:
    images: int
    source: str  # where the images came from
    max_abs_logit_diff: float
    top1_agreement: float
    # multi-label: the share of images given the same labels (each class's sigmoid at its threshold)
    label_agreement: float | None = None
    # an export computing the score of unknown images: its largest difference from graft's own score
    # (relative: graft.export.unknown_graph.score_difference) and the share of images judged alike
    unknown_score_diff: float | None = None
    unknown_agreement: float | None = None


@dataclass(frozen=True)
class Exported:
    path: Path  # the model file (OpenVINO: the .xml, its weights in the .bin beside it)
    metadata_path: Path  # the JSON beside it
    parity: Parity


class _PixelsToScores(torch.nn.Module):
    """uint8 pixels in; logits and probabilities out (the backbone normalises the batch itself): a
    softmax, or for a multi-label model (`multilabel`) each class's sigmoid."""

    def __init__(self, model: torch.nn.Module, *, multilabel: bool = False):
        super().__init__()
        self.model = model
        self.multilabel = multilabel

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(pixels).float()
        return logits, (logits.sigmoid() if self.multilabel else logits.softmax(dim=-1))


def scores_module(classifier: Exportable) -> _PixelsToScores:
    """The classifier's network as an export holds it: pixels in, logits and probabilities out, in eval mode."""
    return _PixelsToScores(classifier.model, multilabel=classifier.task == "multilabel").eval()


def metadata(classifier: Exportable, format: str = "onnx", *, unknown: UnknownScore | None = None) -> dict:
    """What a program needs to feed the exported model and read its answers (graft.predictor.model_metadata);
    `unknown`: the score of unknown images the file computes."""
    return model_metadata(classifier.classes, classifier.data_config, classifier.record, format=f"graft-{format}",
                          task=classifier.task, thresholds=classifier.thresholds, unknown=unknown)


def require_suffix(out: Path, suffix: str, what: str) -> None:
    if out.suffix != suffix:
        raise ExportError(f"--out {out}: {what} file name ends in {suffix} (e.g. {out.with_suffix(suffix).name}).")


def parity_images(classifier: Exportable, count: int = PARITY_IMAGES) -> tuple[list[Path], str]:
    """Up to `count` real images to check an export on: the run's val/test images that can be read,
    if they are still there (a file the run skipped as unreadable is passed over, never a reason
    to refuse the export), else the embedded CIFAR-10 sample (any real photos show a changed
    answer; their labels do not matter)."""
    from ..data.discover import find_eval_data

    record = classifier.record
    source = record.data.source if record and record.data else None
    if source and Path(source).exists():
        try:
            samples, _ = find_eval_data(source, classifier.classes, check_images=False, task=classifier.task)
        except GraftError:
            samples = []
        readable = list(itertools.islice((s.path for s in samples if _readable(s.path)), count))
        if readable:
            return readable, f"the run's own images in {source}"
    demo = Path(str(files("graft").joinpath(DEMO_DATA))) / "val"
    paths = sorted(p for p in demo.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return paths[:: max(1, len(paths) // count)][:count], "graft's embedded CIFAR-10 sample"


def _readable(path: Path) -> bool:
    """Whether graft can read the image at `path` (it is decoded: a truncated file is found too)."""
    from ..data.images import load_image

    try:
        load_image(path)
    except GraftError:  # BadImageError: missing, empty, corrupt, too large
        return False
    return True


def images_to_check(classifier: Exportable, check_images: list[Path] | None) -> tuple[list[Path], str]:
    return (list(check_images), "given images") if check_images else parity_images(classifier)


def check_parity(run: Callable[[np.ndarray], np.ndarray], classifier: Exportable, images: list[Path], *,
                 source: str, unknown: UnknownScore | None = None) -> Parity:
    """Compare `run` (the export: uint8 pixels N x 3 x H x W in, logits out) with the PyTorch model
    (fp32) on the same pixels, prepared as every prediction prepares them (graft.data.prepare). The export is run on the first image alone, then on the rest in
    batches of several (graft.runtime.pixel_slices, as the model too, which bounds the memory), so a
    batch size fixed into it shows here too. With `unknown` (a score the export computes), `run`
    returns the logits and each image's score side by side (N x classes + 1), and the score is
    compared with graft.unknown's on the PyTorch model's features and logits."""
    from ..data.images import eval_draft_size, load_image
    from ..data.prepare import prepare_image
    from ..runtime import pixel_slices, run_in_slices

    if not images:
        raise ExportError("No image to check the export on: give --check-images with some image files.")
    config = classifier.data_config
    draft = eval_draft_size(config.image_size)  # as every prediction reads them (graft.predictor)
    pixels = torch.from_numpy(np.stack([prepare_image(load_image(image, draft_size=draft), config) for image in images]))
    batches = [pixels[:1], pixels[1:]] if len(pixels) > 1 else [pixels]
    try:
        exported = np.concatenate([run_in_slices(lambda part: np.asarray(run(part), dtype=np.float32), batch.numpy())
                                   for batch in batches])
    except Exception as error:  # each runtime raises its own kinds; the message says which
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ExportError(f"The export could not be run on {len(images)} images of {tuple(pixels.shape[1:])} "
                          f"(the first alone, then the rest in batches): {first[:300]}") from None
    model = classifier.model.eval()
    parts = pixel_slices(len(pixels), *pixels.shape[-2:])
    with torch.inference_mode():
        features = torch.cat([model.backbone(pixels[part]).float() for part in parts])
        reference = model.head(features).float().numpy()
    unknown_figures = {}
    if unknown is not None:
        from .unknown_graph import score_difference

        exported, graph_scores = exported[:, :-1], exported[:, -1]
        scores = unknown.score(features.numpy(), logits=reference)
        unknown_figures = dict(unknown_score_diff=score_difference(graph_scores, scores),
                               unknown_agreement=float(((graph_scores > unknown.threshold)
                                                        == (scores > unknown.threshold)).mean()))
    if exported.shape != reference.shape:
        raise ExportError(f"The export answered {exported.shape} logits for {reference.shape} expected.")
    labels = None
    if classifier.task == "multilabel":  # the answers are the label sets: each class's sigmoid at its threshold
        from ..evaluation.thresholds import DEFAULT_THRESHOLD, decide, sigmoid

        thresholds = (classifier.thresholds if classifier.thresholds is not None
                      else np.full(len(classifier.classes), DEFAULT_THRESHOLD))
        given = [decide(sigmoid(logits), thresholds) for logits in (exported, reference)]
        labels = float((given[0] == given[1]).all(axis=1).mean())
    return Parity(images=len(images), source=source,
                  max_abs_logit_diff=float(np.abs(exported - reference).max()),
                  top1_agreement=float((exported.argmax(axis=1) == reference.argmax(axis=1)).mean()),
                  label_agreement=labels, **unknown_figures)


def judge(parity: Parity, what: str, remedy: str, log) -> None:
    """Print the parity figures; refuse an export that changes any answer (or gives NaN): a top-1
    answer, or for a multi-label model a label set at the thresholds."""
    multilabel = parity.label_agreement is not None
    agreement = parity.label_agreement if parity.label_agreement is not None else parity.top1_agreement
    answers = "label sets (each class at its threshold)" if multilabel else "top-1 answers"
    if log:
        log(f"Parity with PyTorch on {parity.images} images ({parity.source}): "
            f"{'label-set' if multilabel else 'top-1'} agreement {agreement:.1%}, largest logit difference "
            f"{parity.max_abs_logit_diff:.2e}")
    if not np.isfinite(parity.max_abs_logit_diff):
        raise ExportError(f"The {what} export answers NaN or infinity on {parity.source}: it was not written. {remedy}")
    if parity.unknown_score_diff is not None:
        from .unknown_graph import SCORE_TOLERANCE

        if log:
            log(f"Score of unknown images: largest difference {parity.unknown_score_diff:.2e} (relative), the same "
                f"judgement for {parity.unknown_agreement:.1%} of the images")
        if not parity.unknown_score_diff <= SCORE_TOLERANCE:
            raise ExportError(f"The {what} export's score of unknown images differs from graft's by "
                              f"{parity.unknown_score_diff:.2e} (relative; at most {SCORE_TOLERANCE:g} is allowed) on "
                              f"{parity.source}: it was not written. {remedy}")
    if not agreement >= 1.0:
        raise ExportError(
            f"The {what} export changes {round((1 - agreement) * parity.images)} of {parity.images} "
            f"{answers} (largest logit difference {parity.max_abs_logit_diff:.2e}): it was not written. "
            f"{remedy}")
