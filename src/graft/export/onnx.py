"""The whole classifier as one ONNX file that another program can run with nothing else.

The graph takes uint8 RGB pixels, N x 3 x H x W, already resized and cropped as the metadata says
(the backbone's pretrained preprocessing), and normalises them itself; it returns `logits` and
`probabilities` for N images (N is dynamic). The class names, input size, mean/std, interpolation
and crop travel in the ONNX file's metadata (each key's value as JSON) and in a JSON file beside it.
The parity check (graft.export.common) runs it in ONNX Runtime.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..engines import trace_onnx
from ..io import atomic_path, write_json_atomic
from .common import (
    FORMATS,
    OUTPUTS,
    Exported,
    ExportError,
    Parity,
    _PixelsToScores,
    check_parity,
    images_to_check,
    judge,
    metadata,
    parity_images,
    require_suffix,
)

if TYPE_CHECKING:
    from ..classifier import Classifier

__all__ = ["FORMATS", "ExportError", "Exported", "Parity", "check_parity", "export_onnx", "metadata",
           "parity_images", "write_onnx"]


def write_onnx(classifier: Classifier, path: Path) -> None:
    """The classifier (pixels in, logits and probabilities out, batch dynamic) as ONNX at `path`."""
    model = _PixelsToScores(classifier.model).eval()
    example = torch.zeros((2, *classifier.data_config.input_size), dtype=torch.uint8)
    trace_onnx(model, example, path, output_names=list(OUTPUTS))


def export_onnx(classifier: Classifier, out: str | Path, *, check_images: list[Path] | None = None,
                log=print) -> Exported:
    """Write `out` (e.g. model.onnx) and `out`.json; refuse an export that changes a top-1 answer."""
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ExportError(f"ONNX export needs the onnx and onnxruntime packages ({error.name} is missing): "
                          "pip install onnx onnxruntime onnxscript") from None
    out = Path(out)
    require_suffix(out, ".onnx", "an ONNX")
    out.parent.mkdir(parents=True, exist_ok=True)
    info = metadata(classifier, "onnx")
    with atomic_path(out) as temporary:
        write_onnx(classifier, temporary)
        graph = onnx.load(str(temporary))
        graph.metadata_props.extend(
            onnx.StringStringEntryProto(key=key, value=json.dumps(value)) for key, value in info.items())
        onnx.save(graph, str(temporary))
        session = onnxruntime.InferenceSession(str(temporary), providers=["CPUExecutionProvider"])
        images, source = images_to_check(classifier, check_images)
        parity = check_parity(lambda pixels: session.run(["logits"], {"pixels": pixels})[0], classifier, images,
                              source=source)
        judge(parity, "ONNX", "Update onnx/onnxruntime/torch, or report the model's backbone to graft.", log)
    metadata_path = out.with_name(out.name + ".json")
    write_json_atomic(metadata_path, {**info, "parity": asdict(parity)})
    return Exported(path=out, metadata_path=metadata_path, parity=parity)
