"""Micro-batching: concurrent requests share one forward pass.

Each request turns its images into uint8 pixel tensors (in its own thread) and hands them to
`Batcher.submit`, which returns a Future. One worker thread owns the model: it takes the first
waiting request, keeps collecting requests for up to `window_ms` milliseconds (or until
`max_batch` images), runs them as one batch and answers each request with its own rows of
probabilities. With `window_ms=0` batching is off: every request runs alone, in arrival order.

Requests are never split, so a request's answers never depend on which others it shared a batch
with, apart from the last float bits of a batched matrix product (the tests compare batched
answers with `Classifier.predict`).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch

from ..classifier import Classifier
from ..engines.forward import frozen_forward

# The window `window_ms=None` picks, by engine. Measured with benchmarks/serve.py (docs/benchmarks.md,
# "Serving"; 2-core CPU, Lite0 at 224 px, 16 clients): batching made torch (bf16) 1.52x faster in
# requests/s, and ONNX Runtime 0.84x (slower: its cost per image does not fall with the batch, and
# requests wait). Engines not listed (onnxruntime, openvino) run every request alone.
AUTO_WINDOW_MS = {"torch": 5.0}
SERVER_IMAGES = 1_000_000  # what a server tells `--engine auto` it will answer: a long pass, worth compiling


@dataclass
class _Job:
    pixels: torch.Tensor  # N x 3 x H x W uint8, as eval_transform(pixels=True) makes them
    future: Future = field(default_factory=Future)


_STOP = object()


class Batcher:
    """The one thread that runs the model; `submit` from any thread, `close` once at the end."""

    def __init__(self, classifier: Classifier, *, window_ms: float | None = None, max_batch: int = 32,
                 engine: str | None = None):
        if window_ms is not None and window_ms < 0:
            raise ValueError(f"window_ms {window_ms}: use 0 (no batching) or more")
        if max_batch < 1:
            raise ValueError(f"max_batch {max_batch}: use 1 or more")
        self.classifier = classifier
        self.max_batch = max_batch
        self.lock = threading.Lock()  # held while the model runs: the activation maps take it too
        self.batches = 0  # forward passes run so far
        self.images = 0  # images answered so far
        self._queue: queue.Queue = queue.Queue()
        # The engine (graft.engines) is chosen and, where it compiles, compiled here, before the first request.
        self._resources = ExitStack()
        self.forward = self._resources.enter_context(frozen_forward(
            classifier.model, runtime=classifier.inference_runtime(max_batch, engine), images=SERVER_IMAGES,
            input_size=classifier.data_config.input_size))
        if window_ms is None:  # batching where it measured faster: see AUTO_WINDOW_MS
            window_ms = AUTO_WINDOW_MS.get(self.forward.engine, 0.0)
        self.window_ms = window_ms
        self.window_s = window_ms / 1000
        self._thread = threading.Thread(target=self._work, name="graft-serve-batcher", daemon=True)
        self._thread.start()

    @property
    def batching(self) -> bool:
        return self.window_s > 0

    def submit(self, pixels: torch.Tensor) -> Future:
        """Probabilities (N x classes, float32 on the CPU) for `pixels`, as a Future."""
        job = _Job(pixels)
        if not self._thread.is_alive():
            job.future.set_exception(RuntimeError("the model's worker thread has stopped"))
            return job.future
        self._queue.put(job)
        return job.future

    def pending(self) -> int:
        return self._queue.qsize()

    @property
    def engine(self) -> str:
        return self.forward.engine

    @property
    def precision(self) -> str:
        return self.forward.precision

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after the requests already queued; safe to call more than once."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        self._resources.close()

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
            pixels = torch.cat([job.pixels for job in jobs]) if len(jobs) > 1 else jobs[0].pixels
            with self.lock:
                probabilities = self.forward(pixels).softmax(dim=-1)
        except Exception as error:  # a bug or an out-of-memory: every waiting request hears of it
            for job in jobs:
                job.future.set_exception(error)
            return
        self.batches += 1
        self.images += len(pixels)
        start = 0
        for job in jobs:
            job.future.set_result(probabilities[start : start + len(job.pixels)].clone())
            start += len(job.pixels)
