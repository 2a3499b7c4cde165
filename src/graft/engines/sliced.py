"""An ONNX Runtime session that runs a batch's slices side by side, each on its own core.

Every frozen forward pass in ONNX Runtime (feature extraction, `graft predict`, `ExportedModel`)
goes through here. A batch is cut into slices (graft.runtime.pixel_slices: 4 images at 224 px);
rather than running the slices one after another, each spread over all cores by ONNX Runtime's
intra-op threads, the slices run at once, one thread each. Why: with intra-op threads every
operator waits for its slowest thread, so when anything else takes a core (the thread that reads
and decodes the next batch of images, another process) the whole pass waits; slices on threads of
their own do not wait for each other: on the 2-core Xeon with AMX, `graft predict` and the bare
pass both ran faster this way (docs/benchmarks.md, "Batch prediction", "Slices side by side", has
the figures and how they were measured). The answers are bit for bit the same: ONNX Runtime's CPU
kernels here do not change their sums with the number of threads or the batch size
(tests/test_engines.py checks it).

A single slice (one image at 224 px, or a whole batch of small images) has nothing to share, so it
runs in a second session with all the threads: a lone image keeps its latency (measured in the same
section).

The module imports neither torch nor timm (`graft predict model.onnx` runs without them).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..runtime import pixel_slices, usable_cores

# At most this many slices run at once: each holds its intermediates in memory (the second slice
# and the single-slice session added to `graft predict`'s peak RSS: docs/benchmarks.md, "Batch
# prediction"), and a batch of 64 at 224 px has 16 slices. Cores beyond it go to intra-op
# threads inside each slice, as ONNX Runtime would use them.
MAX_PARALLEL_SLICES = 4


class SlicedSession:
    """`session(pixels)`: the graph's output `output` (default: its first) for a uint8 batch
    N x C x H x W, as float32 numpy, computed slice by slice with the slices side by side.

    `threads`: the cores to use (default: graft.runtime.usable_cores()); `parallel`: at most this many slices at
    once (1: one after another, each over all the threads). Raises what ONNX Runtime raises for a
    file it cannot read, so that callers word the message for their own file.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None, output: str | None = None,
                 parallel: int = MAX_PARALLEL_SLICES):
        self.path, self.threads = Path(path), max(1, threads or usable_cores())
        self.workers = max(1, min(self.threads, parallel))
        self.outputs = [output] if output else None
        self.session = self._session(max(1, self.threads // self.workers))
        self._whole = self.session if self.workers == 1 else None  # the all-threads session, made on first use
        self._pool: ThreadPoolExecutor | None = None

    def _session(self, intra_op_threads: int):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: warnings about unused initialisers are noise
        options.intra_op_num_threads = intra_op_threads
        # Idle threads sleep instead of spinning: the thread that reads the next batch needs the cores then.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def metadata(self) -> dict[str, str]:
        """The graph's custom metadata (graft export writes the classes and preprocessing there)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        parts = pixel_slices(len(pixels), *pixels.shape[-2:])
        if len(parts) == 1:
            if self._whole is None:
                self._whole = self._session(self.threads)
            return self._whole.run(self.outputs, {"pixels": np.ascontiguousarray(pixels)})[0]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="graft-slice")

        def run(part: slice) -> np.ndarray:  # ONNX Runtime releases the GIL while it runs
            return self.session.run(self.outputs, {"pixels": np.ascontiguousarray(pixels[part])})[0]

        return np.concatenate(list(self._pool.map(run, parts)))
