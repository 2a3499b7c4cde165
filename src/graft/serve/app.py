"""`graft serve`: a trained model behind HTTP (FastAPI), with a web page to try it.

    GET  /          the page: drop or pick images, see the top classes as bars and the activation map
                    (a multi-label model's: every label over its threshold, then the bars)
    GET  /health    {"status": "ok", ...}
    GET  /model     classes, backbone, strategy, accuracies, input size, task and thresholds, the
                    server's limits
    POST /predict   one or more images (multipart files, or one image as the raw body) -> top-k JSON
                    (a multi-label model's: the labels over their thresholds and every class's
                    probability too); ?top_k=N (default 5), ?cam=1 adds each image's activation map
                    (PNG data URLs; a multi-label model's answers also hold `cams`, a map per label),
                    ?threshold=T decides a multi-label model's labels at T for every class; a model
                    with a score of unknown images (graft.unknown) adds unknown, unknown_score and
                    answer ("none of the N classes" when unknown, else the label; a multi-label
                    model's: "unlike every training image", else its labels) to each answer
    GET  /docs      the API described on one page that needs nothing from the network (FastAPI's own
                    Swagger UI loads its scripts from a CDN, and is blank offline); the schema is
                    at /openapi.json

A request the server cannot use gets a 4xx with {"detail": "<file>: <what is wrong and what to do>"}
and the server goes on serving: 400 no file or an empty one, 413 too many bytes or images, 415 not an
image, 422 a corrupt image or a decompression bomb. Memory stays bounded: bodies are counted as they
arrive (and refused past `max_mb` before they are kept), a request holds at most `max_images`
images, at most `decoders` images are decoded at once, and one thread runs the model.

The model is any graft.predictor predictor (`graft.load`: a run folder, or an export): images are
decoded and prepared as every prediction prepares them, and the answers are graft.prediction's, so
the server answers exactly as `graft predict` and `graft.load(...).predict` do. Activation maps
(`cam=1`) need the network itself: a run folder.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import threading
from contextlib import asynccontextmanager
from importlib.resources import files

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ..prediction import http_answer
from ..predictor import BatchPredictor
from .batching import Batcher
from .uploads import RequestError, decode

DEFAULT_MAX_MB = 20.0
DEFAULT_MAX_IMAGES = 32
DEFAULT_WINDOW_MS = None  # by engine: graft.serve.batching.AUTO_WINDOW_MS (docs/benchmarks.md, "Serving")
DEFAULT_MAX_BATCH = 32
CAM_SIDE = 320  # the activation map's picture is drawn at least this large (a 32 px model view is a blur)


def create_app(
    predictor: BatchPredictor,
    *,
    max_mb: float = DEFAULT_MAX_MB,
    max_images: int = DEFAULT_MAX_IMAGES,
    batch_window_ms: float | None = DEFAULT_WINDOW_MS,
    max_batch: int = DEFAULT_MAX_BATCH,
    decoders: int | None = None,
    name: str | None = None,
) -> FastAPI:
    """The FastAPI app serving `predictor` (graft.load's: its engine was chosen when it was opened).
    `batch_window_ms=0` turns batching off (one request per forward pass), None batches where it
    measured faster (5 ms with torch, off with ONNX Runtime); `decoders` bounds the images decoded
    at once (default: the CPU count, 2 to 8)."""
    batcher = Batcher(predictor, window_ms=batch_window_ms, max_batch=max_batch)
    decoding = threading.BoundedSemaphore(decoders or min(8, max(2, os.cpu_count() or 2)))
    page = files("graft.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    max_bytes = int(max_mb * 1024 * 1024)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        batcher.close()

    app = FastAPI(title="graft serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher
    app.state.predictor = predictor
    app.add_middleware(_LimitBody, max_bytes=max_bytes, max_mb=max_mb)

    @app.exception_handler(RequestError)
    async def refuse(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(api_page(app.openapi(), name=name, max_mb=max_mb, max_images=max_images))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "pending": batcher.pending(), "batches": batcher.batches, "images": batcher.images}

    @app.get("/model")
    async def model() -> dict:
        return describe(predictor, name=name) | {
            "engine": batcher.engine,
            "precision": batcher.precision,
            "limits": {"max_mb": max_mb, "max_images": max_images},
            "batching": {"window_ms": batcher.window_ms, "max_batch": max_batch, "on": batcher.batching},
        }

    @app.post("/predict")
    async def predict(request: Request, top_k: int = Query(5, ge=1, le=1000), cam: bool = False,
                      threshold: float | None = Query(None, gt=0, lt=1)) -> dict:
        if cam and not hasattr(predictor, "model"):
            raise RequestError(400, "cam=1: activation maps need the network itself; serve the run folder "
                                    "(graft serve runs/NAME) rather than an exported model, or drop cam=1.")
        thresholds = _decision_thresholds(predictor, threshold)
        uploads = await _read_uploads(request, max_images)
        images, pixels = await run_in_threadpool(_prepare, uploads, decoding, predictor, keep=cam)
        del uploads
        probabilities, unknown = await asyncio.wrap_future(batcher.submit(pixels))
        answers = predictor.answers(probabilities, min(top_k, len(predictor.classes)), thresholds=thresholds,
                                    unknown=unknown)
        for (name_, _), prediction in zip(images, answers):
            prediction.path = name_
        answer = http_answer(answers)
        if cam:
            drawn = await run_in_threadpool(_maps_of_answers, predictor, batcher.lock, [image for _, image in images],
                                            answers, probabilities)
            for item, pictures in zip(answer["predictions"], drawn):
                item["cam"] = pictures[0]
                if predictor.multilabel:
                    item["cams"] = pictures
        return answer

    return app


def describe(predictor: BatchPredictor, *, name: str | None = None) -> dict:
    """What GET /model answers: enough for a person or a program to know which model this is."""
    metadata = predictor.metadata
    record = getattr(predictor, "record", None)
    accuracy = dict(record.accuracy) if record is not None else {"val": metadata.get("val_accuracy")}
    return {
        "name": name,
        "classes": list(predictor.classes),
        "backbone": metadata.get("backbone"),
        "strategy": metadata.get("strategy"),
        "val_accuracy": metadata.get("val_accuracy"),
        "accuracy": accuracy,
        "input_size": list(predictor.data_config.input_size),
        "task": predictor.task,
        "thresholds": ({name: float(value) for name, value in zip(predictor.classes, predictor.decision_thresholds())}
                       if predictor.multilabel else None),
        **({"unknown": predictor.unknown.to_dict()} if predictor.unknown is not None else {}),
    }


# Form fields other than files that a request may hold (top_k and cam travel in the URL): a bound on
# what the parser keeps, far above any real use.
MAX_FIELDS = 100


async def _read_uploads(request: Request, max_images: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image in the request: multipart file fields, else the raw body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":  # any other type (curl --data-binary says x-www-form-urlencoded): the bytes
        data = await request.body()
        if not data:
            raise RequestError(400, "No image: the request body is empty. Send the image's bytes as the body "
                                    "(curl --data-binary @photo.jpg) or as multipart files (curl -F file=@photo.jpg).")
        return [("request body", data)]
    try:
        # The parser stops at the first file over max_images (nothing more is kept): Starlette then
        # answers 400 in its own words, where this server's promise is 413 naming --max-images.
        form = await request.form(max_files=max_images, max_fields=MAX_FIELDS)
    except HTTPException as error:
        raise _form_refused(error, max_images) from None
    try:
        uploads = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
        if not uploads:
            raise RequestError(400, "No file in the form: add the images as file fields (curl -F file=@photo.jpg).")
        named = []
        for index, upload in enumerate(uploads, 1):
            if not upload.filename and not upload.size:
                raise RequestError(400, f"File field {index} ({upload.filename or 'no name'}) holds no file: choose an image.")
            named.append((upload.filename or f"image {index}", await upload.read()))
    finally:
        await form.close()
    return named


def _form_refused(error: HTTPException, max_images: int) -> RequestError:
    """Starlette's refusal of a multipart form, as this server's RequestError (413 for too many images)."""
    detail = str(error.detail)
    if detail.startswith("Too many files"):
        return RequestError(413, f"More than {max_images} images in one request; send them in several requests "
                                 "(or start the server with a larger --max-images).")
    if detail.startswith("Too many fields"):
        return RequestError(400, f"More than {MAX_FIELDS} form fields: send only the images, as file fields "
                                 "(curl -F file=@photo.jpg); top_k and cam go in the URL.")
    return RequestError(error.status_code, f"The multipart form could not be read ({detail}); send the images as "
                                           "file fields (curl -F file=@photo.jpg).")


def api_page(schema: dict, *, name: str | None = None, max_mb: float = DEFAULT_MAX_MB,
             max_images: int = DEFAULT_MAX_IMAGES) -> str:
    """The API on one HTML page, from the app's OpenAPI schema: every endpoint with its parameters and
    what it answers, and curl examples. Everything is in the page (no script, no stylesheet from
    elsewhere), so it reads offline, where FastAPI's Swagger UI loads its scripts from a CDN."""
    from html import escape

    rows = []
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            parameters = "".join(
                f"<li><code>{escape(p['name'])}</code> ({escape(p.get('in', ''))}"
                + (f", default {escape(str(p['schema']['default']))}" if "default" in p.get("schema", {}) else "")
                + ")</li>" for p in operation.get("parameters", []))
            rows.append(f"<h2><code>{escape(method.upper())} {escape(path)}</code></h2>"
                        f"<p>{escape(operation.get('summary', ''))}</p>"
                        + (f"<ul>{parameters}</ul>" if parameters else ""))
    title = "graft serve" + (f": {name}" if name else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}: API</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 50em; margin: 2em auto; padding: 0 1em; color: #222; }}
code, pre {{ background: #f3f3f3; padding: 0 .25em; }} pre {{ padding: .6em; overflow-x: auto; }}</style></head>
<body><h1>{escape(title)}: API</h1>
<p>Try the model on <a href="/">the page</a>; <a href="/model">/model</a> says which model this is and the server's
limits; the OpenAPI schema is at <a href="/openapi.json">/openapi.json</a>.</p>
<p>A request the server cannot use gets a 4xx with <code>{{"detail": "..."}}</code> naming the file and what to do,
and the server goes on serving: 400 no file or an empty one, 413 a body over {max_mb:g} MB or more than
{max_images} images, 415 not an image, 422 a corrupt image or a decompression bomb.</p>
<pre>curl -F file=@rose.jpg -F file=@daisy.jpg 'http://HOST/predict?top_k=3'   # multipart: one or more images
curl --data-binary @rose.jpg http://HOST/predict                          # or one image as the raw body</pre>
{"".join(rows)}
</body></html>
"""


def _prepare(uploads: list[tuple[str, bytes]], decoding: threading.BoundedSemaphore, predictor: BatchPredictor, *,
             keep: bool) -> tuple[list[tuple[str, Image.Image | None]], np.ndarray]:
    """Decode and prepare every upload as every prediction does (graft.predictor; at most
    `decoding`'s count of images at once, server-wide); the pictures are kept only when the
    activation maps need them."""
    images: list[tuple[str, Image.Image | None]] = []
    pixels = []
    for name, data in uploads:
        with decoding:
            image = decode(data, name, draft_size=predictor.draft_size)
            pixels.append(predictor.prepare(image))
        images.append((name, image if keep else None))
    return images, np.stack(pixels)


def _decision_thresholds(predictor: BatchPredictor, threshold: float | None) -> np.ndarray | None:
    """A multi-label model's thresholds for this request (`threshold` for every class where given);
    None for a single-label model, which refuses a threshold with 400."""
    if threshold is not None and not predictor.multilabel:
        raise RequestError(400, f"threshold={threshold:g}: thresholds decide a multi-label model's labels; this "
                                "model gives each image its one most likely class. Drop threshold.")
    return predictor.decision_thresholds(threshold) if predictor.multilabel else None


def _maps_of_answers(classifier, lock: threading.Lock, images: list, answers: list, probabilities: np.ndarray
                     ) -> list[list[dict]]:
    """For each image, the activation maps (`_activation_maps`) of its most likely class; for a
    multi-label model, of each of its labels (most likely first; its most likely class where it has none)."""
    explained = [[classifier.classes.index(name) for name in (answer.labels or [])] or [int(best)]
                 if classifier.multilabel else [int(best)]
                 for answer, best in zip(answers, probabilities.argmax(axis=1))]
    pairs = [(index, chosen) for index, classes in enumerate(explained) for chosen in classes]
    maps = _activation_maps(classifier, lock, [images[index] for index, _ in pairs], [chosen for _, chosen in pairs])
    drawn: list[list[dict]] = [[] for _ in explained]
    for (index, _), picture in zip(pairs, maps):
        drawn[index].append(picture)
    return drawn


def _activation_maps(classifier, lock: threading.Lock, images: list, classes: list[int]) -> list[dict]:
    """For each image, the model's view of it and the activation map of `classes[i]`, as PNG data URLs
    the page lays one over the other (a run folder's Classifier: its network)."""
    import torch

    from ..data.transforms import eval_transform
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
