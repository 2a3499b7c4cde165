"""The whole classifier as one ONNX file that another program can run with nothing else.

The graph takes uint8 RGB pixels, N x 3 x H x W, already resized and cropped as the metadata says
(the backbone's pretrained preprocessing), and normalises them itself; it returns `logits` and
`probabilities` for N images (N is dynamic). The class names, input size, mean/std, interpolation
and crop travel in the ONNX file's metadata and in a JSON file beside it.

Every export is checked against the PyTorch model on real images (the run's own val or test images
when they are still there, else the embedded CIFAR-10 sample): the largest logit difference and the
top-1 agreement are printed and saved beside the export, and an export that changes any top-1
answer is refused, with nothing left on disk.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..engines import trace_onnx
from ..errors import GraftError
from ..io import atomic_path, write_json_atomic

if TYPE_CHECKING:
    from ..classifier import Classifier

FORMATS = ("onnx",)
PARITY_IMAGES = 64  # enough to see a changed answer, few enough for seconds on a CPU
DEMO_DATA = "demo_data/cifar10-sample"


class ExportError(GraftError):
    """An export could not be made, or it would not answer like the model."""


@dataclass(frozen=True)
class Parity:
    images: int
    source: str  # where the images came from
    max_abs_logit_diff: float
    top1_agreement: float


@dataclass(frozen=True)
class Exported:
    path: Path  # the model file
    metadata_path: Path  # the JSON beside it
    parity: Parity


class _PixelsToScores(torch.nn.Module):
    """uint8 pixels in; logits and probabilities out (the backbone normalises the batch itself)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(pixels).float()
        return logits, logits.softmax(dim=-1)


def metadata(classifier: Classifier) -> dict:
    """What a program needs to feed the exported graph and read its answers."""
    config = classifier.data_config
    record = classifier.record
    return {
        "format": "graft-onnx",
        "version": 1,
        "classes": classifier.classes,
        "input": {
            "name": "pixels",
            "dtype": "uint8",
            "layout": "NCHW, RGB",
            "size": list(config.input_size),
            "preprocessing": (f"resize the short side to {int(config.image_size / config.crop_pct)} px "
                              f"({config.interpolation}), then crop the centre {config.image_size} x "
                              f"{config.image_size}; images smaller than that are resized whole to it. "
                              "Normalisation is inside the graph."),
            "interpolation": config.interpolation,
            "crop_pct": config.crop_pct,
            "crop_mode": config.crop_mode,
            "mean": list(config.mean),
            "std": list(config.std),
        },
        "outputs": ["logits", "probabilities"],
        "backbone": record.backbone if record else None,
        "strategy": record.strategy if record else None,
        "val_accuracy": record.accuracy.get("val") if record else None,
    }


def export_onnx(classifier: Classifier, out: str | Path, *, check_images: list[Path] | None = None,
                log=print) -> Exported:
    """Write `out` (e.g. model.onnx) and `out`.json; refuse an export that changes a top-1 answer."""
    try:
        import onnx
        import onnxruntime  # noqa: F401  (the parity check runs the export with it)
    except ImportError as error:
        raise ExportError(f"ONNX export needs the onnx and onnxruntime packages ({error.name} is missing): "
                          "pip install onnx onnxruntime onnxscript") from None
    say = log or (lambda message: None)
    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"--out {out}: an ONNX file name ends in .onnx (e.g. {out.with_suffix('.onnx').name}).")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = _PixelsToScores(classifier.model).eval()
    size = classifier.data_config.input_size
    example = torch.zeros((2, *size), dtype=torch.uint8)
    info = metadata(classifier)
    with atomic_path(out) as temporary:
        trace_onnx(model, example, temporary, output_names=["logits", "probabilities"])
        graph = onnx.load(str(temporary))
        graph.metadata_props.extend(
            onnx.StringStringEntryProto(key=key, value=json.dumps(value)) for key, value in info.items())
        onnx.save(graph, str(temporary))
        images, source = check_images or [], "given images"
        if not images:
            images, source = parity_images(classifier)
        parity = check_parity(classifier, temporary, images, source=source)
        say(f"Parity with PyTorch on {parity.images} images ({parity.source}): top-1 agreement "
            f"{parity.top1_agreement:.1%}, largest logit difference {parity.max_abs_logit_diff:.2e}")
        if parity.top1_agreement < 1.0:
            raise ExportError(
                f"The ONNX export changes {round((1 - parity.top1_agreement) * parity.images)} of {parity.images} "
                f"top-1 answers (largest logit difference {parity.max_abs_logit_diff:.2e}): it was not written. "
                "Update onnx/onnxruntime/torch, or report the model's backbone to graft.")
    metadata_path = out.with_name(out.name + ".json")
    write_json_atomic(metadata_path, {**info, "parity": asdict(parity)})
    return Exported(path=out, metadata_path=metadata_path, parity=parity)


def parity_images(classifier: Classifier) -> tuple[list[Path], str]:
    """Real images to check an export on: the run's val/test images if they are still there, else the
    embedded CIFAR-10 sample (any real photos show a changed answer; their labels do not matter)."""
    from ..data.discover import find_eval_data

    record = classifier.record
    source = record.data.source if record and record.data else None
    if source and Path(source).exists():
        try:
            samples, _ = find_eval_data(source, classifier.classes, check_images=False)
            if samples:
                return [s.path for s in samples[:PARITY_IMAGES]], f"the run's own images in {source}"
        except GraftError:
            pass
    demo = Path(str(files("graft").joinpath(DEMO_DATA))) / "val"
    paths = sorted(p for p in demo.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return paths[:: max(1, len(paths) // PARITY_IMAGES)][:PARITY_IMAGES], "graft's embedded CIFAR-10 sample"


def check_parity(classifier: Classifier, path: Path, images: list[Path], *, source: str) -> Parity:
    """Run the export (ONNX Runtime) and the PyTorch model (fp32) on the same pixels and compare."""
    import onnxruntime

    from ..data.images import load_image
    from ..data.transforms import eval_transform

    if not images:
        raise ExportError("No image to check the export on: give --check-images FOLDER.")
    transform = eval_transform(classifier.data_config, pixels=True)
    pixels = torch.stack([transform(load_image(image)) for image in images])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    exported = session.run(["logits"], {"pixels": pixels.numpy()})[0]
    model = classifier.model.eval()
    with torch.inference_mode():
        reference = model(pixels).float().numpy()
    return Parity(images=len(images), source=source,
                  max_abs_logit_diff=float(np.abs(exported - reference).max()),
                  top1_agreement=float((exported.argmax(axis=1) == reference.argmax(axis=1)).mean()))
