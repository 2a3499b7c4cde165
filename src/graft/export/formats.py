"""`graft export --format`: one function per format, each writing the model file(s) and a JSON beside.

onnx: model.onnx (ONNX Runtime and any ONNX runtime); openvino: model.xml + model.bin (OpenVINO IR);
torchscript: model.pt (libtorch / torch.jit.load). See graft.export.common for what they share.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .common import FILE_NAMES, FORMATS, Exportable, Exported, ExportError

__all__ = ["FILE_NAMES", "FORMATS", "export", "written_files"]


def written_files(out: str | Path, format: str = "onnx") -> list[Path]:
    """Every file an export to `out` writes: the model file, the JSON beside it, and OpenVINO's .bin."""
    out = Path(out)
    return [out, out.with_name(out.name + ".json"), *([out.with_suffix(".bin")] if format == "openvino" else [])]


def export(classifier: Exportable, out: str | Path, *, format: str = "onnx", check_images: list[Path] | None = None,
           log=print) -> Exported:
    """The whole classifier (a graft.load of a run folder) for another program to run alone
    (normalisation inside, class names and preprocessing in its metadata), checked against the
    PyTorch model on real images first: `graft export RUN` calls this.

    `format`: "onnx" (out: model.onnx), "openvino" (model.xml, its weights in model.bin beside it;
    needs pip install 'graft[openvino]') or "torchscript" (model.pt; loading it runs TorchScript
    code, so load only archives you trust). `check_images`: the images of the parity check (default:
    the run's val or test images, else graft's sample). Returns graft.export.common.Exported (the
    file, the JSON beside it, the parity figures); raises ExportError when an answer would change.
    A run's score of unknown images (graft.unknown) is computed inside an ONNX or OpenVINO file too
    (output `unknown_score`, the threshold in the metadata: graft.export.unknown_graph); a TorchScript
    file does not carry it."""
    write: Callable[..., Exported]
    if format == "onnx":
        from .onnx import export_onnx as write
    elif format == "openvino":
        from .openvino import export_openvino as write
    elif format == "torchscript":
        from .torchscript import export_torchscript as write
    else:
        raise ExportError(f"--format {format!r}: choose one of {', '.join(FORMATS)}.")
    if not hasattr(classifier, "model"):
        raise ExportError("graft export takes a run folder (the PyTorch model); an exported model is exported already.")
    images = [Path(p) for p in check_images] if check_images else None
    unknown = getattr(classifier, "unknown", None)  # the run's score of unknown images (graft.unknown), if any
    if format == "torchscript":
        if unknown is not None and log:
            log("The TorchScript file does not carry the run's score of unknown images (--format onnx or openvino do).")
        return write(classifier, out, check_images=images, log=log)
    return write(classifier, out, check_images=images, unknown=_fitting(unknown, log), log=log)


def _fitting(unknown, log):
    """`unknown` where one model file can hold its arrays, else None (and said)."""
    from .unknown_graph import MAX_SCORE_BYTES, score_bytes

    if unknown is None or score_bytes(unknown) <= MAX_SCORE_BYTES:
        return unknown
    if log:
        log(f"The file does not carry the run's score of unknown images: its arrays take "
            f"{score_bytes(unknown) / 2**20:,.0f} MB, more than one model file holds "
            f"({MAX_SCORE_BYTES / 2**20:,.0f} MB); graft predict RUN answers with it.")
    return None
