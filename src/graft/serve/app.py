"""`graft serve`: a trained classifier behind HTTP (FastAPI), with a web page to try it.

    GET  /          the page: drop or pick images, see the top classes as bars and the activation map
    GET  /health    {"status": "ok", ...}
    GET  /model     classes, backbone, strategy, accuracies, input size, the server's limits
    POST /predict   one or more images (multipart files, or one image as the raw body) -> top-k JSON;
                    ?top_k=N (default 5), ?cam=1 adds each image's activation map (PNG data URLs)

A request the server cannot use gets a 4xx with {"detail": "<file>: <what is wrong and what to do>"}
and the server goes on serving: 400 no file or an empty one, 413 too many bytes or images, 415 not an
image, 422 a corrupt image or a decompression bomb. Memory stays bounded: bodies are counted as they
arrive (and refused past `max_mb` before they are kept), a request holds at most `max_images`
images, at most `decoders` images are decoded at once, and one thread runs the model.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import threading
from contextlib import asynccontextmanager
from importlib.resources import files

import torch
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..classifier import Classifier
from ..data.images import eval_draft_size
from ..data.transforms import eval_transform
from .batching import Batcher
from .uploads import RequestError, decode

DEFAULT_MAX_MB = 20.0
DEFAULT_MAX_IMAGES = 32
DEFAULT_WINDOW_MS = None  # by engine: graft.serve.batching.AUTO_WINDOW_MS (docs/benchmarks.md, "Serving")
DEFAULT_MAX_BATCH = 32
CAM_SIDE = 320  # the activation map's picture is drawn at least this large (a 32 px model view is a blur)


def create_app(
    classifier: Classifier,
    *,
    max_mb: float = DEFAULT_MAX_MB,
    max_images: int = DEFAULT_MAX_IMAGES,
    batch_window_ms: float | None = DEFAULT_WINDOW_MS,
    max_batch: int = DEFAULT_MAX_BATCH,
    decoders: int | None = None,
    engine: str | None = None,
    name: str | None = None,
) -> FastAPI:
    """The FastAPI app serving `classifier`. `batch_window_ms=0` turns batching off (one request per
    forward pass), None batches where it measured faster (5 ms with torch, off with ONNX Runtime); `decoders` bounds the images decoded at once (default: the CPU count, 2 to 8);
    `engine`: what runs the model (graft.engines: auto, torch, onnxruntime, openvino; default: the
    classifier's runtime's, auto)."""
    batcher = Batcher(classifier, window_ms=batch_window_ms, max_batch=max_batch, engine=engine)
    decoding = threading.BoundedSemaphore(decoders or min(8, max(2, os.cpu_count() or 2)))
    pixels_transform = eval_transform(classifier.data_config, pixels=True)
    draft = eval_draft_size(classifier.data_config.image_size)  # big JPEGs decode smaller, as in predict
    page = files("graft.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    max_bytes = int(max_mb * 1024 * 1024)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        batcher.close()

    app = FastAPI(title="graft serve", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.batcher = batcher
    app.state.classifier = classifier
    app.add_middleware(_LimitBody, max_bytes=max_bytes, max_mb=max_mb)

    @app.exception_handler(RequestError)
    async def refuse(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "pending": batcher.pending(), "batches": batcher.batches, "images": batcher.images}

    @app.get("/model")
    async def model() -> dict:
        return describe(classifier, name=name) | {
            "engine": batcher.engine,
            "precision": batcher.precision,
            "limits": {"max_mb": max_mb, "max_images": max_images},
            "batching": {"window_ms": batcher.window_ms, "max_batch": max_batch, "on": batcher.batching},
        }

    @app.post("/predict")
    async def predict(request: Request, top_k: int = Query(5, ge=1, le=1000), cam: bool = False) -> dict:
        uploads = await _read_uploads(request, max_images)
        images, pixels = await run_in_threadpool(_prepare, uploads, decoding, pixels_transform, draft_size=draft,
                                                 keep=cam)
        del uploads
        probabilities = await asyncio.wrap_future(batcher.submit(pixels))
        k = min(top_k, len(classifier.classes))
        top = probabilities.topk(k, dim=-1)
        answers = []
        for index, (name_, _) in enumerate(images):
            ranked = [{"class": classifier.classes[c], "probability": float(p)}
                      for p, c in zip(top.values[index].tolist(), top.indices[index].tolist())]
            answers.append({"name": name_, "label": ranked[0]["class"], "probability": ranked[0]["probability"],
                            "top": ranked})
        if cam:
            maps = await run_in_threadpool(_activation_maps, classifier, batcher.lock, [image for _, image in images],
                                           top.indices[:, 0].tolist())
            for answer, drawn in zip(answers, maps):
                answer["cam"] = drawn
        return {"predictions": answers}

    return app


def describe(classifier: Classifier, *, name: str | None = None) -> dict:
    """What GET /model answers: enough for a person or a program to know which model this is."""
    record = classifier.record
    accuracy = dict(record.accuracy) if record is not None else {}
    return {
        "name": name,
        "classes": list(classifier.classes),
        "backbone": record.backbone if record is not None else None,
        "strategy": record.strategy if record is not None else None,
        "val_accuracy": accuracy.get("val"),
        "accuracy": accuracy,
        "input_size": list(classifier.data_config.input_size),
    }


async def _read_uploads(request: Request, max_images: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image in the request: multipart file fields, else the raw body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":  # any other type (curl --data-binary says x-www-form-urlencoded): the bytes
        data = await request.body()
        if not data:
            raise RequestError(400, "No image: the request body is empty. Send the image's bytes as the body "
                                    "(curl --data-binary @photo.jpg) or as multipart files (curl -F file=@photo.jpg).")
        return [("request body", data)]
    async with request.form(max_files=max_images + 1, max_fields=100) as form:
        uploads = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not uploads:
            raise RequestError(400, "No file in the form: add the images as file fields (curl -F file=@photo.jpg).")
        if len(uploads) > max_images:
            raise RequestError(413, f"More than {max_images} images in one request; send them in several requests "
                                    "(or start the server with a larger --max-images).")
        named = []
        for index, upload in enumerate(uploads, 1):
            if not upload.filename and not upload.size:
                raise RequestError(400, f"File field {index} ({upload.filename or 'no name'}) holds no file: choose an image.")
            named.append((upload.filename or f"image {index}", await upload.read()))
    return named


def _prepare(uploads: list[tuple[str, bytes]], decoding: threading.BoundedSemaphore, transform, *,
             draft_size: tuple[int, int], keep: bool) -> tuple[list[tuple[str, Image.Image | None]], torch.Tensor]:
    """Decode and preprocess every upload (at most `decoding`'s count of images at once, server-wide);
    the pictures are kept only when the activation maps need them."""
    images: list[tuple[str, Image.Image | None]] = []
    tensors = []
    for name, data in uploads:
        with decoding:
            image = decode(data, name, draft_size=draft_size)
            tensors.append(transform(image))
        images.append((name, image if keep else None))
    return images, torch.stack(tensors)


def _activation_maps(classifier: Classifier, lock: threading.Lock, images: list, classes: list[int]) -> list[dict]:
    """For each image, the model's view of it and the activation map of `classes[i]`, as PNG data URLs
    the page lays one over the other."""
    from ..explain import activation_maps, model_view, overlay

    config = classifier.data_config
    transform = eval_transform(config)
    batch = torch.stack([transform(image) for image in images])
    with lock:
        maps = activation_maps(classifier.model, batch, classes=torch.tensor(classes))
    drawn = []
    for index, explained in enumerate(maps.classes.tolist()):
        view = model_view(batch[index], config)
        scale = max(1.0, CAM_SIDE / min(view.size))
        if scale > 1:
            view = view.resize((round(view.width * scale), round(view.height * scale)), Image.Resampling.BICUBIC)
        heatmap = overlay(view, maps.maps[index], alpha=1.0)  # the colours alone: the page blends them
        drawn.append({"method": maps.method, "class": classifier.classes[explained],
                      "image": _data_url(view), "heatmap": _data_url(heatmap)})
    return drawn


def _data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class _LimitBody:
    """Refuse request bodies over `max_bytes` with 413: at once when Content-Length says so, else as
    soon as the bytes received pass the limit (a chunked upload), before the body is kept."""

    def __init__(self, app, *, max_bytes: int, max_mb: float):
        self.app = app
        self.max_bytes = max_bytes
        self.message = (f"The request is larger than this server's limit of {max_mb:g} MB; send a smaller image "
                        "(or start the server with a larger --max-mb).")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"detail": f"{int(declared):,} bytes. {self.message}"}, status_code=413,
                                    headers={"connection": "close"})
            return await response(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestError(413, f"More than {self.max_bytes:,} bytes. {self.message}")
            return message

        return await self.app(scope, counted, send)
