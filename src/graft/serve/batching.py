"""Micro-batching: concurrent requests share one forward pass.

Each request turns its images into uint8 pixels (in its own thread, as graft.predictor prepares
them) and hands them to `Batcher.submit`, which returns a Future. One worker thread owns the model:
it takes the first waiting request, keeps collecting requests for up to `window_ms` milliseconds
(or until `max_batch` images), runs them as one batch through the predictor's `judged` (the
probabilities and, for a model with a score of unknown images, each image's score) and answers each
request with its own rows. With `window_ms=0` batching is off: every request runs
alone, in arrival order.

Requests are never split, so a request's answers never depend on which others it shared a batch
with, apart from the last float bits of a batched matrix product (the tests compare batched
answers with `predict`).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ..predictor import BatchPredictor

# The window `window_ms=None` picks, by engine: batching served more requests/s with torch, and
# fewer with ONNX Runtime, whose cost per image does not fall with the batch, so requests only wait
# (docs/benchmarks.md, "Serving", has the figures; `python -m benchmarks --only serve`). Engines
# not listed (onnxruntime, openvino) run every request alone.
AUTO_WINDOW_MS = {"torch": 5.0}


@dataclass
class _Job:
    pixels: np.ndarray  # N x 3 x H x W uint8, as BatchPredictor.prepare makes them
    future: Future = field(default_factory=Future)


_STOP = object()


class Batcher:
    """The one thread that runs the model; `submit` from any thread, `close` once at the end."""

    def __init__(self, predictor: BatchPredictor, *, window_ms: float | None = None, max_batch: int = 32):
        if window_ms is not None and window_ms < 0:
            raise ValueError(f"window_ms {window_ms}: use 0 (no batching) or more")
        if max_batch < 1:
            raise ValueError(f"max_batch {max_batch}: use 1 or more")
        self.predictor = predictor
        self.max_batch = max_batch
        self.lock = threading.Lock()  # held while the model runs: the activation maps take it too
        self.batches = 0  # forward passes run so far
        self.images = 0  # images answered so far
        self._queue: queue.Queue = queue.Queue()
        # The engine is chosen (graft.engines.choice) and its graph made here, before the first request.
        self.engine, self.precision = predictor.engine, predictor.precision
        if window_ms is None:  # batching where it measured faster: see AUTO_WINDOW_MS
            window_ms = AUTO_WINDOW_MS.get(self.engine, 0.0)
        self.window_ms = window_ms
        self.window_s = window_ms / 1000
        self._thread = threading.Thread(target=self._work, name="graft-serve-batcher", daemon=True)
        self._thread.start()

    @property
    def batching(self) -> bool:
        return self.window_s > 0

    def submit(self, pixels: np.ndarray) -> Future:
        """For `pixels`, as a Future: their probabilities (N x classes, float32) and their scores of
        unknown images (N; None for a model without a score), graft.predictor.BatchPredictor.judged."""
        job = _Job(pixels)
        if not self._thread.is_alive():
            job.future.set_exception(RuntimeError("the model's worker thread has stopped"))
            return job.future
        self._queue.put(job)
        return job.future

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after the requests already queued; safe to call more than once."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _work(self) -> None:
        carried: _Job | None = None  # a request that did not fit into the last batch
        while True:
            first = carried if carried is not None else self._queue.get()
            carried = None
            if first is _STOP:
                return
            jobs, count = [first], len(first.pixels)
            if self.batching:
                deadline = time.monotonic() + self.window_s
                while count < self.max_batch:
                    remaining = deadline - time.monotonic()
                    try:
                        job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is _STOP or count + len(job.pixels) > self.max_batch:
                        carried = job
                        break
                    jobs.append(job)
                    count += len(job.pixels)
            self._run(jobs)
            if carried is _STOP:
                return

    def _run(self, jobs: list[_Job]) -> None:
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]  # a client gone: skip it
        if not jobs:
            return
        try:
            pixels = np.concatenate([job.pixels for job in jobs]) if len(jobs) > 1 else jobs[0].pixels
            with self.lock:
                probabilities, unknown = self.predictor.judged(pixels)
        except Exception as error:  # a bug or an out-of-memory: every waiting request hears of it
            for job in jobs:
                job.future.set_exception(error)
            return
        self.batches += 1
        self.images += len(pixels)
        start = 0
        for job in jobs:
            rows = slice(start, start + len(job.pixels))
            job.future.set_result((np.array(probabilities[rows]), None if unknown is None else np.array(unknown[rows])))
            start += len(job.pixels)
