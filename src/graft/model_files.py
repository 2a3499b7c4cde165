"""graft's model files: weights in safetensors, everything else in JSON. Never pickle.

A run folder (or any folder) holds `model.safetensors` and `graft.json` (a graft.record.RunRecord),
and, for a model with a score of unknown images (graft.unknown), that score's arrays in
`unknown.safetensors` (its threshold and kind in graft.json's `unknown`). The JSON records the
SHA-256 of the weights (and of the score's arrays) and is written last, each file to a temporary name then
renamed, so a crash mid-save leaves either the previous complete model or a mismatch that
`read_model_files` refuses. `load_model` builds the network they describe.

The module is torch-free until a function needs torch (graft predict decides from the record alone
whether torch is needed at all), and imports neither graft.classifier nor graft.export: both use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelFileError
from .io import atomic_path, file_sha256, write_json_atomic
from .record import RECORD_FILE, RECORD_VERSION, RunRecord, read_json

if TYPE_CHECKING:  # the module stays torch-free: graft predict reads records without torch
    import torch

    from .model import GraftModel
    from .unknown import UnknownScore

WEIGHTS_FILE = "model.safetensors"
META_FILE = RECORD_FILE
UNKNOWN_FILE = "unknown.safetensors"  # the arrays of the score of unknown images (graft.unknown)


def save_model(model: torch.nn.Module, record: RunRecord, folder: str | Path, *,
               unknown: UnknownScore | None = None) -> Path:
    """Write the weights, `unknown`'s arrays where the model has a score of unknown images (its JSON
    part goes in the record: `record.unknown` must be `unknown.to_dict()`), then graft.json, sealed."""
    from safetensors.numpy import save_file as save_arrays
    from safetensors.torch import save_file

    if (unknown.to_dict() if unknown is not None else None) != record.unknown:
        raise ValueError("record.unknown must be the JSON part of the score of unknown images saved with it")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights) as temporary:
        save_file(state, str(temporary), metadata={"format": "graft", "version": str(RECORD_VERSION)})
    sealed = {**record.to_dict(), "weights_sha256": file_sha256(weights)}
    if unknown is not None:
        with atomic_path(folder / UNKNOWN_FILE) as temporary:
            save_arrays(unknown.tensors(), str(temporary), metadata={"format": "graft-unknown"})
        sealed["unknown_sha256"] = file_sha256(folder / UNKNOWN_FILE)
    else:  # a score left from an earlier save in this folder is no longer the model's
        (folder / UNKNOWN_FILE).unlink(missing_ok=True)
    write_json_atomic(folder / META_FILE, {**sealed, "record_sha256": record_checksum(sealed)})
    return folder


def record_checksum(record: dict) -> str:
    """SHA-256 of the record's canonical JSON (keys sorted, the checksum itself left out): any edit of
    graft.json (two class names swapped, a class removed) changes it."""
    import hashlib
    import json

    canonical = json.dumps({k: v for k, v in record.items() if k != "record_sha256"}, sort_keys=True,
                           ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def resolve_model_folder(path: str | Path) -> Path:
    """A run folder, a model folder, or the path of its graft.json / model.safetensors."""
    path = Path(path)
    if path.is_file() and path.name in (WEIGHTS_FILE, META_FILE):
        path = path.parent
    if not path.exists():
        raise ModelFileError(f"{path}: no such run or model folder. Pass the folder `graft train` wrote (runs/NAME).")
    if not (path / META_FILE).exists() or not (path / WEIGHTS_FILE).exists():
        raise ModelFileError(
            f"{path}: not a complete graft model (needs {WEIGHTS_FILE} and {META_FILE}). "
            "Was training interrupted? Train again or pass another run folder."
        )
    return path


def read_record(path: str | Path, *, check_weights: bool = True) -> tuple[RunRecord, Path]:
    """The record of a saved model and its folder, checked against itself and (`check_weights`)
    against the weights file, without reading the weights into tensors and without torch.

    Checking the weights hashes the whole file: do it once per use of a model. `check_weights=False`
    is for a caller that only decides how to open the model, and then opens it through a function
    that checks them (read_model_files)."""
    folder = resolve_model_folder(path)
    data = read_json(folder / META_FILE)
    # Version 1 records had no checksum of their own; every later one is sealed by save_model.
    if isinstance(data, dict) and data.get("format_version") != 1 and data.get("record_sha256") != record_checksum(data):
        raise ModelFileError(
            f"{folder / META_FILE} was changed after graft saved it (its checksum differs): the class names, "
            "preprocessing and weights it describes can no longer be trusted to match. Restore the original "
            "file, or train again."
        )
    record = RunRecord.from_dict(data, source=str(folder / META_FILE))
    if check_weights:
        check_weights_file(folder, data.get("weights_sha256"))
        if record.unknown is not None:
            check_unknown_file(folder, data.get("unknown_sha256"))
    return record, folder


def check_weights_file(folder: Path, expected: str | None) -> None:
    """Refuse weights whose SHA-256 is not the one graft.json records (`expected`)."""
    if expected != file_sha256(folder / WEIGHTS_FILE):
        raise ModelFileError(
            f"{folder / WEIGHTS_FILE} does not match {META_FILE} (checksum differs): the save was "
            "interrupted or a file was replaced. Train again or restore both files together."
        )


def check_unknown_file(folder: Path, expected: str | None) -> None:
    """Refuse a score of unknown images whose arrays are missing or not the ones graft.json records."""
    path = folder / UNKNOWN_FILE
    if not path.is_file() or expected != file_sha256(path):
        raise ModelFileError(
            f"{path} is missing or does not match {META_FILE} (checksum differs): graft.json holds a score of "
            "unknown images whose arrays were not saved with it or were replaced. Restore the run folder's files "
            "together, or train again."
        )


def read_unknown(folder: str | Path, record: RunRecord) -> UnknownScore | None:
    """The model's score of unknown images (graft.unknown.UnknownScore): graft.json's `unknown` with
    the arrays of unknown.safetensors (checked by `read_record`); None for a model without one
    (multi-label models, and models saved before graft fitted it). Torch-free."""
    if record.unknown is None:
        return None
    from safetensors.numpy import load_file

    from .unknown import UnknownScore

    path = Path(folder) / UNKNOWN_FILE
    try:
        arrays = load_file(str(path))
    except (OSError, ValueError) as error:
        raise ModelFileError(f"{path}: the arrays of the score of unknown images cannot be read ({error}); "
                             "train again.") from None
    return UnknownScore.from_dict(record.unknown, arrays)


def read_model_files(path: str | Path) -> tuple[RunRecord, dict[str, torch.Tensor], Path]:
    """The record and the weights of a saved model, checked against each other."""
    from safetensors.torch import load_file

    record, folder = read_record(path)
    return record, load_file(str(folder / WEIGHTS_FILE)), folder


def load_model(path: str | Path) -> tuple[GraftModel, RunRecord, Path]:
    """The network a saved model describes, with its weights, in eval mode; its record and folder."""
    from .backbones import create_backbone
    from .heads import HeadConfig, create_head
    from .model import GraftModel

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
    return model.eval(), record, folder
