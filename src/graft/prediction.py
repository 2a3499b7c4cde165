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

    A multi-label model's answer (several labels per image) also holds `labels`, the classes whose
    probability reaches their threshold (graft.evaluation.decide), most likely first, possibly none;
    and `probabilities`, every class's probability (an independent sigmoid each) in the model's class
    order. A single-label model's answer has neither (None). For an input that could not be read,
    `error` says why and `top` is empty.

    A model with a score of unknown images (graft.unknown, kept with the run) also answers
    `unknown_score`, how unlike its training images the image is, and `unknown`: True where that is
    over the model's threshold, the image then being of none of its `known_classes` classes (`label`
    stays the most likely class; a multi-label model's `labels` stay those over their thresholds).
    Answers of other models have None in all three.
    """

    path: str
    top: list[tuple[str, float]]
    error: str | None = None
    labels: list[str] | None = None
    probabilities: dict[str, float] | None = None
    unknown: bool | None = None
    unknown_score: float | None = None
    known_classes: int | None = None

    @property
    def verdict(self) -> str:
        """In words: "none of the N classes" for an unknown image, else its label; a multi-label
        model's: "unlike every training image" for an unknown image (where "none of the classes"
        would read as an image with no label), else its labels ("no label" where it has none)."""
        if self.labels is not None:
            return "unlike every training image" if self.unknown else ", ".join(self.labels) or "no label"
        return f"none of the {self.known_classes} classes" if self.unknown else self.label

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
        path, label, probability and top ([{class, probability}], most likely first); a multi-label
        model's: path, labels (over their thresholds, most likely first), probabilities ({class:
        probability} for every class) and top; for an input that could not be read, path and error.
        A model with a score of unknown images adds unknown, unknown_score and answer (`verdict`)."""
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        top = [{"class": name, "probability": p} for name, p in self.top]
        answer: dict[str, Any] = (
            {"path": self.path, "labels": list(self.labels), "probabilities": dict(self.probabilities or {}), "top": top}
            if self.labels is not None else
            {"path": self.path, "label": self.label, "probability": self.probability, "top": top})
        if self.unknown is not None:
            answer.update(unknown=self.unknown, unknown_score=self.unknown_score, answer=self.verdict)
        return answer

    def csv_row(self, columns: int, classes: Sequence[str] | None = None, *, unknown: bool = False) -> list:
        """The row under `csv_header(columns, classes, unknown=unknown)`: path, the top `columns` classes
        with probabilities, error; a multi-label model's (`classes` given): path, labels (`join_labels`),
        each of `classes`' probability, error. Then (`unknown`: a model with a score of unknown images)
        unknown ("true" or "false") and unknown_score, both empty for an input that could not be read."""
        if unknown:
            extra = (["", ""] if self.unknown is None
                     else ["true" if self.unknown else "false", self.unknown_score])
            return [*self.csv_row(columns, classes), *extra]
        if classes is not None:
            if self.error is not None:
                return [self.path, "", *[""] * len(classes), self.error]
            probabilities = self.probabilities or {}
            return [self.path, join_labels(self.labels or [], classes), *(probabilities[name] for name in classes), ""]
        cells: list = [self.path]
        for rank in range(columns):
            cells += list(self.top[rank]) if rank < len(self.top) else ["", ""]
        return [*cells, self.error or ""]

    def lines(self) -> list[str]:
        """The answer as text: the path, then one line per class ("  1. roses   96.0%"); a multi-label
        model's: the path, its labels, then one line per class of `top`, "*" where it is a label. An
        unknown image's says so on the line after the path, with its score."""
        if self.error is not None:
            return [f"{self.path}: {self.error}"]
        if self.labels is not None:
            given = ", ".join(self.labels) if self.labels else "none (no class reaches its threshold)"
            lines = [self.path, f"  labels: {given}",
                     *(f"  {'*' if name in self.labels else ' '} {name:<40} {p:6.1%}" for name, p in self.top)]
            if self.unknown:
                lines.insert(1, f"  unknown: {self.verdict} (unknown score {self.unknown_score:.3f} over the "
                                "model's threshold); the labels it would otherwise have:")
            return lines
        lines = [self.path, *(f"  {rank}. {name:<40} {p:6.1%}" for rank, (name, p) in enumerate(self.top, 1))]
        if self.unknown:
            lines.insert(1, f"  {self.verdict}: unlike every training image (unknown score {self.unknown_score:.3f} "
                            "over the model's threshold); the most likely classes:")
        return lines


def csv_header(columns: int, classes: Sequence[str] | None = None, *, unknown: bool = False) -> list[str]:
    """path, label, probability, then class_2, probability_2, ... up to `columns` classes, and error;
    for a multi-label model (`classes`: its classes): path, labels, probability_CLASS for each class,
    and error. Then, for a model with a score of unknown images (`unknown`), unknown and unknown_score."""
    if classes is not None:
        header = ["path", "labels", *(f"probability_{name}" for name in classes)]
    else:
        header = ["path", "label", "probability"]
        for rank in range(2, columns + 1):
            header += [f"class_{rank}", f"probability_{rank}"]
    return [*header, "error", *(["unknown", "unknown_score"] if unknown else [])]


def join_labels(labels: Sequence[str], classes: Sequence[str]) -> str:
    """A multi-label answer's labels in one CSV cell, as graft reads a label file's: separated by
    spaces, or by "|" where a class name holds a space."""
    return ("|" if any(" " in name for name in classes) else " ").join(labels)


def http_answer(predictions: Iterable[Prediction]) -> dict[str, Any]:
    """What `POST /predict` answers (graft.serve): {"predictions": [Prediction.to_dict(), ...]}."""
    return {"predictions": [prediction.to_dict() for prediction in predictions]}


def write_answers(answers: Iterable[Prediction], *, columns: int, classes: Sequence[str] | None = None,
                  csv_path: str | Path | None = None, json_out: IO[str] | None = None,
                  show: Callable[[Prediction], None] | None = None,
                  each: Callable[[Prediction], None] | None = None,
                  unknown: bool = False) -> tuple[int, list[Prediction]]:
    """Stream `answers` as they come: CSV rows into `csv_path` (written whole or not at all, via
    graft.io.atomic_path), a JSON array of `to_dict` objects into `json_out`, and `show(answer)` for
    each readable answer; `each(answer)` after every one (progress). `classes`: a multi-label model's
    classes (its CSV has a column per class); None for a single-label model. `unknown`: the model has a
    score of unknown images (its CSV adds unknown and unknown_score). Returns how many answers there
    were, and those that could not be read."""
    from .io import atomic_path

    count, failed = 0, []
    with contextlib.ExitStack() as stack:
        writer = None
        if csv_path is not None:
            temporary = stack.enter_context(atomic_path(Path(csv_path)))
            writer = csv.writer(stack.enter_context(temporary.open("x", newline="", encoding="utf-8")))
            writer.writerow(csv_header(columns, classes, unknown=unknown))
        if json_out is not None:
            json_out.write("[")
        for answer in answers:
            if writer is not None:
                writer.writerow(answer.csv_row(columns, classes, unknown=unknown))
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
                   answers: list[Prediction]) -> Iterator[Prediction]:
    """One Prediction per index, in order: an index in `errors` gets its reason, the others take the
    next of `answers` (one per readable input, in the same order; their paths are set here)."""
    from .data.inputs import input_name

    readable = iter(answers)
    for index in indices:
        name = input_name(images[index], index)
        if index in errors:
            yield Prediction(name, [], errors[index])
        else:
            answer = next(readable)
            answer.path = name
            yield answer
