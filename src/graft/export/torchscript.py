"""The whole classifier as a TorchScript archive (`model.pt`) for programs that have libtorch or torch.

It is `torch.jit.trace` of the same model the ONNX export holds: uint8 RGB pixels N x 3 x H x W in
(N dynamic; resized and cropped as the metadata says, normalisation inside), the tuple (logits,
probabilities) out (a multi-label model's probabilities: each class's sigmoid). It runs on the CPU (the normalisation constants were traced there). The
metadata is inside the archive as the extra file "graft.json" (`torch.jit.load(path,
_extra_files={"graft.json": ""})` fills it in) and in `model.pt.json` beside it. The parity check
runs the saved file, loaded back with `torch.jit.load`.

graft's own model files are safetensors + JSON and never run code when read. A TorchScript archive
is different: loading it runs the TorchScript program inside, so load only archives you trust. It
is written only when asked for (`graft export --format torchscript`), for other programs. torch
2.14 marks torch.jit as deprecated (in favour of torch.export) but it still works; its deprecation
warnings are silenced while graft writes the file.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_path, write_json_atomic
from .common import (
    Exportable,
    Exported,
    ExportError,
    check_parity,
    images_to_check,
    judge,
    metadata,
    require_suffix,
    scores_module,
)

EXTRA_FILE = "graft.json"


def export_torchscript(classifier: Exportable, out: str | Path, *, check_images: list[Path] | None = None,
                       log=print) -> Exported:
    """Write `out` (e.g. model.pt) and `out`.json; refuse an export that changes a top-1 answer."""
    out = Path(out)
    require_suffix(out, ".pt", "a TorchScript")
    out.parent.mkdir(parents=True, exist_ok=True)
    info = metadata(classifier, "torchscript")
    model = scores_module(classifier)
    example = torch.zeros((2, *classifier.data_config.input_size), dtype=torch.uint8)
    with atomic_path(out) as temporary, warnings.catch_warnings():
        # torch.jit's FutureWarnings (deprecated) and TracerWarnings (mean/std traced as constants: they are).
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            with torch.inference_mode(False), torch.no_grad():
                traced = torch.jit.trace(model, (example,), check_trace=False)
            torch.jit.save(traced, str(temporary), _extra_files={EXTRA_FILE: json.dumps(info)})
        except Exception as error:  # the tracer raises many kinds; the message says which
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ExportError(f"The model could not be traced to TorchScript: {first[:300]}") from None
        loaded = torch.jit.load(str(temporary), map_location="cpu").eval()

        def run(pixels: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return loaded(torch.from_numpy(pixels))[0].numpy()

        images, source = images_to_check(classifier, check_images)
        parity = check_parity(run, classifier, images, source=source)
        judge(parity, "TorchScript", "Update torch, or use --format onnx.", log)
    metadata_path = out.with_name(out.name + ".json")
    write_json_atomic(metadata_path, {**info, "parity": asdict(parity)})
    return Exported(path=out, metadata_path=metadata_path, parity=parity)
