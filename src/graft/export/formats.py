"""`graft export --format`: one function per format, each writing the model file(s) and a JSON beside.

onnx: model.onnx (ONNX Runtime and any ONNX runtime); openvino: model.xml + model.bin (OpenVINO IR);
torchscript: model.pt (libtorch / torch.jit.load). See graft.export.common for what they share.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .common import FILE_NAMES, FORMATS, Exported, ExportError

if TYPE_CHECKING:
    from ..classifier import Classifier

__all__ = ["FILE_NAMES", "FORMATS", "export"]


def export(classifier: Classifier, out: str | Path, *, format: str = "onnx", check_images: list[Path] | None = None,
           log=print) -> Exported:
    write: Callable[..., Exported]
    if format == "onnx":
        from .onnx import export_onnx as write
    elif format == "openvino":
        from .openvino import export_openvino as write
    elif format == "torchscript":
        from .torchscript import export_torchscript as write
    else:
        raise ExportError(f"--format {format!r}: choose one of {', '.join(FORMATS)}.")
    return write(classifier, out, check_images=check_images, log=log)
