"""The errors graft shows to users.

Every problem caused by the user's input (a path, a file, a value) raises a `GraftError` whose
message names the file or value and says how to fix it. The CLI prints these messages without a
traceback; anything else is a bug in graft and keeps its traceback.
"""


class GraftError(Exception):
    """A problem with the user's input, explained in words. Never a bug in graft."""


class DataError(GraftError):
    """The images, folders or CSV given as training or evaluation data cannot be used."""


class BadImageError(DataError):
    """One image file cannot be read (corrupt, truncated, not an image, too large)."""

    def __init__(self, path, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):  # rebuildable after crossing a DataLoader worker process
        return (type(self), (self.path, self.reason))


class WeightsError(GraftError):
    """Pretrained weights cannot be found, downloaded or loaded."""


class ModelFileError(GraftError):
    """A saved graft model (run folder, model.safetensors, graft.json) cannot be used."""
