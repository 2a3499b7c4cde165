"""Progress: epochs counted from 1, one plain line per epoch outside a terminal, bars only in one."""

from __future__ import annotations

import io
import re
import sys

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from graft import progress as progress_module
from graft.runtime import Runtime
from graft.training.fit import FitSettings, fit

LINE = re.compile(r"^head epoch (\d+)/(\d+): train loss \d+\.\d{3} acc \d+\.\d% \| val loss \d+\.\d{3} acc \d+\.\d% "
                  r"\| \d+\.\d s$")


def _tiny_fit(run_dir, *, epochs: int, progress: bool = True):
    generator = torch.Generator().manual_seed(0)
    features, labels = torch.randn(48, 8, generator=generator), torch.randint(0, 3, (48,), generator=generator)
    train = DataLoader(TensorDataset(features[:32], labels[:32]), batch_size=8)
    val = DataLoader(TensorDataset(features[32:], labels[32:]), batch_size=8)
    head = nn.Linear(8, 3)
    settings = FitSettings(run_dir=run_dir, runtime=Runtime.resolve(precision="32", workers=0, progress=progress),
                           patience=epochs + 1)
    return fit(head, train, val, param_groups=[{"params": list(head.parameters()), "lr": 1e-2}], phase="head",
               epochs=epochs, settings=settings)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_one_line_per_epoch_counted_from_one_outside_a_terminal(tmp_path, capsys):
    assert not sys.stderr.isatty()
    result = _tiny_fit(tmp_path, epochs=3)
    captured = capsys.readouterr()
    lines = _lines(captured.err)
    assert len(lines) == 3, captured.err
    assert [LINE.match(line).groups() for line in lines] == [("1", "3"), ("2", "3"), ("3", "3")], lines
    assert "\r" not in captured.err and captured.out == ""
    assert [row["epoch"] for row in result.history] == [1, 2, 3]


def test_a_one_epoch_fit_is_epoch_1_of_1(tmp_path, capsys):
    _tiny_fit(tmp_path, epochs=1)
    (line,) = _lines(capsys.readouterr().err)
    assert line.startswith("head epoch 1/1: ")


def test_no_progress_prints_nothing(tmp_path, capsys):
    _tiny_fit(tmp_path, epochs=2, progress=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_per_epoch_counted_from_one(tmp_path, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    _tiny_fit(tmp_path, epochs=2)
    shown = terminal.getvalue()
    assert "head 1/2" in shown and "head 2/2" in shown and "head 0/" not in shown
    assert "head epoch" not in shown  # the bars, not the log-file lines
    assert "val loss" in shown  # each bar is left with its epoch's metrics


def test_extraction_outside_a_terminal_says_one_line_when_done(monkeypatch, capsys):
    with progress_module.image_progress(10, "train features", enabled=True) as update:
        update(10)
    assert capsys.readouterr().err == ""  # quick work: nothing to say
    monkeypatch.setattr(progress_module, "LONG_S", 0.0)
    with progress_module.image_progress(10, "train features", enabled=True) as update:
        for _ in range(5):
            update(2)
    (line,) = _lines(capsys.readouterr().err)
    assert line.startswith("train features: 10 images in ")
    with progress_module.image_progress(10, "train features", enabled=False) as update:
        update(10)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("enabled", [True, False])
def test_extraction_error_propagates_through_progress(enabled):
    with pytest.raises(RuntimeError), progress_module.image_progress(4, "x", enabled=enabled) as update:
        update(1)
        raise RuntimeError("boom")
