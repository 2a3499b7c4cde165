"""graft: transfer learning for image classification.

    import graft
    run = graft.train("photos/", strategy="finetune")      # a folder of class folders
    model = graft.load(run.run_dir)                         # or a model.onnx, model.xml, model.pt
    model.predict(["cat.jpg"])                              # [Prediction(path, [(class, p), ...])]
    model.evaluate("photos_test/")                          # accuracy, per-class metrics, confusion

`TrainConfig` holds every option of `train` (graft.config); every model `load` opens is a
`Predictor` (graft.predictor). Names are imported on first use, so `import graft` and `graft --help`
stay fast.
"""

import os as _os

__version__ = "0.1.0"

# ONNX Runtime (1.29 and later) sends usage telemetry and keeps a device id and an event store under
# ~/.cache unless this is set. graft runs offline and caches only where --cache-dir (or
# $GRAFT_CACHE) says; set ORT_DISABLE_TELEMETRY=0 yourself to let ONNX Runtime do as it would.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .errors import BadImageError, DataError, GraftError, ModelFileError, WeightsError  # noqa: E402

_LAZY = {
    "train": ("graft.training.pipeline", "train"),
    "TrainConfig": ("graft.config", "TrainConfig"),
    "load": ("graft.loader", "load"),
    "Predictor": ("graft.predictor", "Predictor"),
    "Classifier": ("graft.classifier", "Classifier"),
    "predict_imagenet": ("graft.backbones.imagenet", "predict_imagenet"),
    "list_backbones": ("graft.backbones.registry", "list_backbones"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'graft' has no attribute {name!r}")


__all__ = ["BadImageError", "DataError", "GraftError", "ModelFileError", "WeightsError", *_LAZY]
