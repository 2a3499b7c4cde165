"""The answer for one image, as every way of predicting returns it (graft.predictor), and the one way
it becomes a CSV row, a JSON object, lines of text or an HTTP answer: `graft predict`, `graft
serve` and the Python API all call these. Torch-free."""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


@dataclass
class Prediction:
    """The answer for one image: `top` holds (class name, probability), most likely first.

    For an input that could not be read, `error` says why and `top` is empty.
    """

    path: str
    top: list[tuple[str, float]]
    error: str | None = None

    @property
    def label(self) -> str:
        """The most likely class ("" for an image that could not be read)."""
        return self.top[0][0] if self.top else ""

    @property
    def probability(self) -> float:
        """The probability of `label` (nan for an image that could not be read)."""
        return self.top[0][1] if self.top else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of `graft predict --json` and of each answer of `POST /predict`:
        path, label, probability and top ([{class, probability}], most likely first); for an input
        that could not be read, path and error."""
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "label": self.label, "probability": self.probability,
                "top": [{"class": name, "probability": p} for name, p in self.top]}

    def csv_row(self, columns: int) -> list:
        """The row under `csv_header(columns)`: path, the top `columns` classes with probabilities, error."""
        cells: list = [self.path]
        for rank in range(columns):
            cells += list(self.top[rank]) if rank < len(self.top) else ["", ""]
        return [*cells, self.error or ""]

    def lines(self) -> list[str]:
        """The answer as text: the path, then one line per class ("  1. roses   96.0%")."""
        if self.error is not None:
            return [f"{self.path}: {self.error}"]
        return [self.path, *(f"  {rank}. {name:<40} {p:6.1%}" for rank, (name, p) in enumerate(self.top, 1))]


def csv_header(columns: int) -> list[str]:
    """path, label, probability, then class_2, probability_2, ... up to `columns` classes, and error."""
    header = ["path", "label", "probability"]
    for rank in range(2, columns + 1):
        header += [f"class_{rank}", f"probability_{rank}"]
    return [*header, "error"]


def http_answer(predictions: Iterable[Prediction]) -> dict[str, Any]:
    """What `POST /predict` answers (graft.serve): {"predictions": [Prediction.to_dict(), ...]}."""
    return {"predictions": [prediction.to_dict() for prediction in predictions]}


def write_answers(answers: Iterable[Prediction], *, columns: int, csv_path: str | Path | None = None,
                  json_out: IO[str] | None = None, show: Callable[[Prediction], None] | None = None,
                  each: Callable[[Prediction], None] | None = None) -> tuple[int, list[Prediction]]:
    """Stream `answers` as they come: CSV rows into `csv_path` (written whole or not at all, via
    graft.io.atomic_path), a JSON array of `to_dict` objects into `json_out`, and `show(answer)` for
    each readable answer; `each(answer)` after every one (progress). Returns how many answers there
    were, and those that could not be read."""
    from .io import atomic_path

    count, failed = 0, []
    with contextlib.ExitStack() as stack:
        writer = None
        if csv_path is not None:
            temporary = stack.enter_context(atomic_path(Path(csv_path)))
            writer = csv.writer(stack.enter_context(temporary.open("x", newline="", encoding="utf-8")))
            writer.writerow(csv_header(columns))
        if json_out is not None:
            json_out.write("[")
        for answer in answers:
            if writer is not None:
                writer.writerow(answer.csv_row(columns))
            if json_out is not None:
                json_out.write(("\n" if count == 0 else ",\n") + json.dumps(answer.to_dict()))
            if answer.error is not None:
                failed.append(answer)
            elif show is not None:
                show(answer)
            count += 1
            if each is not None:
                each(answer)
        if json_out is not None:
            json_out.write("\n]\n" if count else "]\n")
    return count, failed


def write_rows(path: str | Path, columns: list[str], rows: Iterable[dict]) -> None:
    """A CSV of `rows` (dicts with `columns` as keys) at `path`, written whole or not at all (graft
    evaluate's per-image predictions: path, true, predicted, probability)."""
    from .io import atomic_path

    with atomic_path(Path(path)) as temporary, temporary.open("x", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def in_input_order(images: Sequence, indices: Iterable[int], errors: dict[int, str],
                   tops: list[list[tuple[str, float]]]) -> Iterator[Prediction]:
    """One Prediction per index, in order: an index in `errors` gets its reason, the others take the
    next of `tops` (one per readable input, in the same order)."""
    from .data.inputs import input_name

    readable = iter(tops)
    for index in indices:
        name = input_name(images[index], index)
        yield Prediction(name, [], errors[index]) if index in errors else Prediction(name, next(readable))
