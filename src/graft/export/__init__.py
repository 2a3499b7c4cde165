"""graft's model files: weights in safetensors, everything else in JSON. Never pickle.

A run folder (or any folder) holds `model.safetensors` and `graft.json`. The JSON records the
SHA-256 of the weights and is written last, each file to a temporary name then renamed, so a crash
mid-save leaves either the previous complete model or a mismatch that `load_model` refuses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..backbones.weights import file_sha256
from ..errors import ModelFileError

WEIGHTS_FILE = "model.safetensors"
META_FILE = "graft.json"
FORMAT_VERSION = 1


def write_json_atomic(path: Path, data) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2, default=str))
    os.replace(temporary, path)


def save_model(model: torch.nn.Module, meta: dict, folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    temporary = folder / f".{WEIGHTS_FILE}.tmp"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(temporary), metadata={"format": "graft", "version": str(FORMAT_VERSION)})
    os.replace(temporary, weights)
    write_json_atomic(folder / META_FILE, {**meta, "format_version": FORMAT_VERSION, "weights_sha256": file_sha256(weights)})
    return folder


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


def read_model_files(path: str | Path) -> tuple[dict, dict[str, torch.Tensor], Path]:
    folder = resolve_model_folder(path)
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{folder / META_FILE}: not valid JSON ({exc}); the model folder is damaged.") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{folder / META_FILE}: format version {meta.get('format_version')!r}, this graft reads {FORMAT_VERSION}.")
    if meta.get("weights_sha256") != file_sha256(folder / WEIGHTS_FILE):
        raise ModelFileError(
            f"{folder / WEIGHTS_FILE} does not match {META_FILE} (checksum differs): the save was "
            "interrupted or a file was replaced. Train again or restore both files together."
        )
    return meta, load_file(str(folder / WEIGHTS_FILE)), folder
