"""An exported ONNX classifier run by ONNX Runtime alone: predicting without torch.

`graft export RUN` writes model.onnx with everything a program needs in its metadata; this is that
program inside graft: `graft predict model.onnx photos/ --csv out.csv`, or `ExportedModel` in
Python. It imports neither torch nor timm, so it starts in about a second and streams in a fraction
of the memory a run folder's predict needs (torch alone is 520-650 MB resident;
docs/benchmarks.md, "Batch prediction").

Images are prepared as the metadata says, with Pillow: the short side resized to size / crop_pct,
the centre cropped (images smaller than the input are resized whole). graft's own pipeline resizes
the same way with torchvision's uint8 kernels, which round a few pixels differently (bicubic: up to
9/255 on about 1.4% of the pixels of flowers-dev and CIFAR-10 photos), so probabilities can differ
slightly from `graft predict RUN`; `benchmarks/predict.py` counts the top-1 answers that change.
A JPEG far larger than the input decodes at a reduced scale (JPEG's draft mode, 1/2 to 1/8) still
covering 1.15 times the input side, as in graft's own predict and the run's feature extraction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.images import eval_draft_size
from ..data.inputs import ImageInput, input_name, to_rgb_image
from ..engines.sliced import SlicedSession
from ..errors import BadImageError, ModelFileError
from ..prediction import Prediction, in_input_order

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


class ExportedModel:
    """An ONNX file from `graft export` (its metadata inside), ready to predict.

    `threads`: the cores ONNX Runtime may use (default: all this process may run on).
    """

    def __init__(self, path: str | Path, *, threads: int | None = None):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ModelFileError(f"{path}: running an ONNX model needs onnxruntime: pip install onnxruntime") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: no such file; give the model.onnx that `graft export RUN` wrote.")
        try:
            self.session = SlicedSession(self.path, threads=threads, output="probabilities")
        except Exception as error:  # ONNX Runtime raises its own exception types for unreadable files
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise ModelFileError(f"{self.path}: not an ONNX model ONNX Runtime can read ({first}).") from None
        try:
            info = {key: json.loads(value) for key, value in self.session.metadata().items()}
            self.classes = list(info["classes"])
            spec = info["input"]
            self.input_size = tuple(int(v) for v in spec["size"])
            self.resample = _RESAMPLE[spec["interpolation"]]
            crop_pct, crop_mode = float(spec["crop_pct"]), spec["crop_mode"]
        except (KeyError, TypeError, ValueError) as error:
            raise ModelFileError(f"{self.path}: no graft metadata ({error}); predict with a model.onnx written by "
                                 "`graft export RUN --format onnx`.") from None
        if crop_mode != "center" or self.input_size[1] != self.input_size[2]:
            raise ModelFileError(f"{self.path}: crop mode {crop_mode!r} on a {self.input_size[1]}x{self.input_size[2]} "
                                 "input is not supported here; predict with the run folder instead.")
        self.size = self.input_size[1]
        self.resize_to = math.floor(self.size / crop_pct)  # timm's rule, as graft.data.transforms
        self.draft_size = eval_draft_size(self.size)  # big JPEGs decode smaller, as graft's own pipeline does
        self.metadata = info

    def pixels(self, image: Image.Image) -> np.ndarray:
        """One RGB image as the model's input: uint8, 3 x H x W, resized and cropped."""
        if min(image.size) < self.size:  # small images are resized whole, as graft's own pipeline does
            resized = image.resize((self.size, self.size), self.resample)
        else:
            width, height = image.size
            # torchvision's rule for the long side: int(short_target * long / short)
            size = ((self.resize_to, int(self.resize_to * height / width)) if width <= height
                    else (int(self.resize_to * width / height), self.resize_to))
            resized = image.resize(size, self.resample)
            left = int(round((resized.width - self.size) / 2.0))
            top = int(round((resized.height - self.size) / 2.0))
            resized = resized.crop((left, top, left + self.size, top + self.size))
        return np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities for a uint8 batch (N x 3 x H x W), run in slices side by side
        (graft.engines.sliced: bounded memory, one core each)."""
        return self.session(pixels)

    def predict_iter(self, images: Sequence[ImageInput], *, top_k: int = 5, batch_size: int = 64,
                     tta: bool = False) -> Iterator[Prediction]:
        """Predictions in input order, reading one batch of images at a time; an unreadable input is
        an answer with `error` set. `tta`: the mean of the image's and its mirror image's probabilities.

        The next batch is read and decoded in a thread while ONNX Runtime, which releases the GIL,
        runs this one, its slices side by side (graft.engines.sliced), so that the reader taking a
        core holds up one slice rather than every operator (`python benchmarks/read_ahead.py`,
        docs/benchmarks.md "Batch prediction")."""
        k = max(1, min(top_k, len(self.classes)))
        chunks = [range(start, min(start + batch_size, len(images))) for start in range(0, len(images), batch_size)]
        if not chunks:
            return
        with ThreadPoolExecutor(max_workers=1) as reader:
            pending = reader.submit(self.read_batch, images, chunks[0])
            for number, chunk in enumerate(chunks):
                batch, errors = pending.result()
                if number + 1 < len(chunks):
                    pending = reader.submit(self.read_batch, images, chunks[number + 1])
                probabilities = self.probabilities(batch) if batch is not None else None
                if tta and batch is not None and probabilities is not None:
                    probabilities = (probabilities + self.probabilities(batch[..., ::-1])) / 2
                tops = [[(self.classes[c], float(row[c])) for c in np.argsort(-row, kind="stable")[:k]]
                        for row in (probabilities if probabilities is not None else [])]
                yield from in_input_order(images, chunk, errors, tops)

    def read_batch(self, images: Sequence[ImageInput], chunk: range) -> tuple[np.ndarray | None, dict[int, str]]:
        """The readable images of `chunk` as one uint8 batch (None when there is none), and the errors by index."""
        ready, errors = [], {}
        for index in chunk:
            try:
                ready.append(self.pixels(to_rgb_image(images[index], input_name(images[index], index),
                                                      draft_size=self.draft_size)))
            except BadImageError as error:
                errors[index] = error.reason
        return (np.stack(ready) if ready else None), errors

    def predict(self, images: Sequence[ImageInput], *, top_k: int = 5, batch_size: int = 64,
                tta: bool = False) -> list[Prediction]:
        return list(self.predict_iter(images, top_k=top_k, batch_size=batch_size, tta=tta))
