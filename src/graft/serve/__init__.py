"""`graft serve`: a trained classifier as a small web service (FastAPI + uvicorn) with a page to try it.

Importing this package imports FastAPI and torch: the CLI imports it only when `graft serve` runs.
"""

from .app import DEFAULT_MAX_BATCH, DEFAULT_MAX_IMAGES, DEFAULT_MAX_MB, DEFAULT_WINDOW_MS, create_app, describe
from .batching import Batcher
from .server import ALL_INTERFACES, bind, run, url
from .uploads import RequestError, decode

__all__ = [
    "ALL_INTERFACES",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_IMAGES",
    "DEFAULT_MAX_MB",
    "DEFAULT_WINDOW_MS",
    "Batcher",
    "RequestError",
    "bind",
    "create_app",
    "decode",
    "describe",
    "run",
    "url",
]
