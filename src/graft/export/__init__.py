"""Taking a trained model out of graft: its model files (safetensors + JSON, never pickle), exports
for other programs (graft.export.formats) and running an exported ONNX model without torch
(graft.export.exported). Names are imported on first use, so the torch-free parts stay torch-free."""

_LAZY = {name: "graft.export.files" for name in ("META_FILE", "WEIGHTS_FILE", "read_model_files",
                                                  "resolve_model_folder", "save_model")}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'graft.export' has no attribute {name!r}")


__all__ = list(_LAZY)
