"""The whole classifier as OpenVINO IR: `model.xml` (the graph) and `model.bin` (its weights, fp32).

It is converted from the same ONNX graph `graft export --format onnx` writes (uint8 pixels
N x 3 x H x W in, normalisation inside, `logits` and `probabilities` out, N dynamic). The metadata
is in the IR's runtime info, under "graft" (each key's value as JSON: `model.get_rt_info(["graft",
"classes"])`), and in `model.xml.json` beside it. The parity check runs the IR in OpenVINO on the
CPU in f32 (without the f32 hint OpenVINO computes in bf16 on CPUs that have it, and answers move).

Both files are written under temporary names and renamed, the .bin before the .xml: a half-written
export never looks complete, and a refused one leaves nothing. OpenVINO is an optional extra:
pip install 'graft[openvino]'.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..io import atomic_path, write_json_atomic
from .common import Exportable, Exported, ExportError, check_parity, images_to_check, judge, metadata, require_suffix
from .onnx import write_onnx
from .unknown_graph import SCORE_OUTPUT, with_scores

if TYPE_CHECKING:
    from ..unknown import UnknownScore

INSTALL = "pip install 'graft[openvino]'"


def export_openvino(classifier: Exportable, out: str | Path, *, check_images: list[Path] | None = None,
                    unknown: UnknownScore | None = None, log=print) -> Exported:
    """Write `out` (e.g. model.xml), the .bin beside it and `out`.json; refuse an export that changes a
    top-1 answer. `unknown`: a score of unknown images for the IR to compute too, as the ONNX
    export does (graft.export.unknown_graph)."""
    import json

    try:
        import openvino
    except ImportError:
        raise ExportError(f"OpenVINO export needs the openvino package, an optional extra: {INSTALL}") from None
    try:
        import onnx  # noqa: F401  (the IR is converted from the ONNX graph torch's exporter writes)
    except ImportError:
        raise ExportError("OpenVINO export goes through ONNX and needs the onnx package: "
                          "pip install onnx onnxscript") from None
    out = Path(out)
    require_suffix(out, ".xml", "an OpenVINO IR")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="graft-export-") as folder:
        graph = Path(folder) / "model.onnx"
        kept = unknown if write_onnx(classifier, graph, unknown=unknown, say=log) else None
        model = openvino.convert_model(str(graph))
    info = metadata(classifier, "openvino", unknown=kept)
    for key, value in info.items():
        model.set_rt_info(json.dumps(value), ["graft", key])
    # Exit order renames the .bin first, then the .xml; on any error both temporary files go.
    with atomic_path(out) as xml, atomic_path(out.with_suffix(".bin")) as weights:
        written_weights = xml.with_suffix(".bin")  # where save_model puts them: beside the .xml, same stem
        try:
            openvino.save_model(model, str(xml), compress_to_fp16=False)  # fp32, as trained
            compiled = openvino.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            images, source = images_to_check(classifier, check_images)
            def run(pixels: np.ndarray) -> np.ndarray:
                found = compiled({"pixels": pixels})
                return with_scores(found["logits"], found[SCORE_OUTPUT] if kept is not None else None)

            parity = check_parity(run, classifier, images, source=source, unknown=kept)
            judge(parity, "OpenVINO", "Update openvino/onnx/torch, or report the model's backbone to graft.", log)
            os.replace(written_weights, weights)
        finally:
            written_weights.unlink(missing_ok=True)
    metadata_path = out.with_name(out.name + ".json")
    write_json_atomic(metadata_path, {**info, "parity": asdict(parity)})
    return Exported(path=out, metadata_path=metadata_path, parity=parity)
