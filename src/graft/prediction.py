"""The answer for one image, as every way of predicting returns it (graft.classifier, graft.export.exported)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass


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

    def to_dict(self) -> dict:
        answer: dict = {"path": self.path, "label": self.label,
                        "top": [{"class": c, "probability": p} for c, p in self.top]}
        if self.error is not None:
            answer["error"] = self.error
        return answer


def in_input_order(images: Sequence, indices: Iterable[int], errors: dict[int, str],
                   tops: list[list[tuple[str, float]]]) -> Iterator[Prediction]:
    """One Prediction per index, in order: an index in `errors` gets its reason, the others take the
    next of `tops` (one per readable input, in the same order)."""
    from .data.inputs import input_name

    readable = iter(tops)
    for index in indices:
        name = input_name(images[index], index)
        yield Prediction(name, [], errors[index]) if index in errors else Prediction(name, next(readable))
