"""Taking a trained model out of graft: its model files (safetensors + JSON, never pickle)."""

from .files import META_FILE, WEIGHTS_FILE, read_model_files, resolve_model_folder, save_model

__all__ = ["META_FILE", "WEIGHTS_FILE", "read_model_files", "resolve_model_folder", "save_model"]
