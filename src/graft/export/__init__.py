"""Taking a trained model out of graft, for other programs: the whole classifier as ONNX, OpenVINO IR
or TorchScript (`export`, graft.export.formats), each checked against PyTorch; and graft's own
predictors over those files (graft.export.exported: an ONNX model without torch;
graft.export.loaded: OpenVINO IR and TorchScript). Names are imported on first use, so the
torch-free parts stay torch-free.

graft's own model files (safetensors + graft.json) live in graft.model_files.
"""

_LAZY = {
    "export": "graft.export.formats",
    "FORMATS": "graft.export.formats",
    "FILE_NAMES": "graft.export.formats",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'graft.export' has no attribute {name!r}")


__all__ = list(_LAZY)
