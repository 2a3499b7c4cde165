"""Shared fixtures: tiny synthetic image folders, made here so the suite needs no downloads.

The session-scoped datasets are shared by every test: copy them (shutil.copytree) before changing
anything in them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def pytest_configure(config):
    _one_share_of_the_cores_per_worker()
    if hasattr(config.option, "loadscopereorder"):  # the files' order is pytest_collection_modifyitems' below
        config.option.loadscopereorder = False
    config.addinivalue_line(
        "markers", "slow: takes more than a few seconds on 2 CPU cores (training several models, the demo, "
                   "several processes); deselect with -m 'not slow'")


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist's --dist loadfile (pyproject's addopts) a worker takes a whole file, and xdist
    would hand the files out largest first by their number of tests: a file of two minute-long tests
    (DDP training, the linter) came last and kept one worker busy while the other had finished. Files
    holding a test marked slow go out first instead (then the most tests first, as xdist did); the
    tests within a file keep their order. Set here for every worker alike, so their collections match."""
    if not _distributing_files(config):
        return
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    counts: dict = {}
    for item in items:
        counts[item.path] = counts.get(item.path, 0) + 1
    items.sort(key=lambda item: (item.path not in slow_files, -counts[item.path], str(item.path)))


def _distributing_files(config) -> bool:
    """This process is an xdist worker, handed whole files (--dist loadfile or loadscope)."""
    return hasattr(config, "workerinput") and getattr(config.option, "dist", "no") in ("loadfile", "loadscope")


def _one_share_of_the_cores_per_worker() -> None:
    """Under pytest-xdist (pyproject's addopts run one worker per core), each worker keeps to its own
    cores: torch and ONNX Runtime size their thread pools from this process's cores (graft.runtime.
    usable_cores), and two workers each spinning threads on every core ran slower than one."""
    import os

    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < count:
        return
    share = cores[int(worker.removeprefix("gw")) % count::count]
    os.sched_setaffinity(0, share)
    import torch

    torch.set_num_threads(len(share))


COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}


def make_image(
    path: Path,
    size: tuple[int, int] = (40, 40),
    color: tuple[int, int, int] = (255, 0, 0),
    mode: str = "RGB",
    noise: bool = True,
    seed: int = 0,
) -> Path:
    """Save an image of `size` (width, height) dominated by `color` and return its path.

    With `noise`, Gaussian noise and a bright square at a random place make every seed a different
    image (so models cannot memorise one picture), while the colour still decides the class. The
    format follows the suffix; `mode` converts the RGB image first (e.g. "L", "P", "CMYK").
    """
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = np.empty((height, width, 3), dtype=np.float32)
    pixels[:] = color
    if noise:
        pixels += rng.normal(0, 25, pixels.shape)
        side = max(2, min(width, height) // 4)
        x, y = rng.integers(0, width - side), rng.integers(0, height - side)
        pixels[y : y + side, x : x + side] = 235
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if mode != "RGB":
        image = image.convert(mode)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _build(root: Path, per_split: dict[str, int]) -> Path:
    """`root/<split>/<colour>/NNN.png` (`root/<colour>/NNN.png` for split ""), each image unique."""
    seed = 0
    for split, count in per_split.items():
        for name, colour in COLOURS.items():
            for index in range(count):
                seed += 1
                make_image(root / split / name / f"{index:03d}.png", color=colour, seed=seed)
    return root


@pytest.fixture(name="make_image")
def make_image_fixture():
    """The `make_image(path, size, color, mode, noise, seed)` helper, for tests that build files."""
    return make_image


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """train/ and val/ with 3 colour classes (red, green, blue): 12 train and 4 val images each, 40x40 px."""
    return _build(tmp_path_factory.mktemp("tiny"), {"train": 12, "val": 4})


@pytest.fixture(scope="session")
def tiny_multilabel(tmp_path_factory) -> Path:
    """Several labels per image: 72 images (40 px), each grey and noisy with one or two coloured squares
    (red, green, blue) at random places, labelled in labels.csv (`path,labels`, space-separated)."""
    import csv

    root = tmp_path_factory.mktemp("multilabel")
    rng = np.random.default_rng(0)
    names = list(COLOURS)
    rows = []
    for index in range(72):
        present = sorted(rng.choice(len(names), size=int(rng.integers(1, 3)), replace=False).tolist())
        pixels = np.full((40, 40, 3), 128.0) + rng.normal(0, 20, (40, 40, 3))
        for label in present:
            x, y = rng.integers(0, 20, 2)
            pixels[y:y + 20, x:x + 20] = COLOURS[names[label]]
        path = root / "images" / f"{index:03d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
        rows.append((f"images/{index:03d}.png", " ".join(names[label] for label in present)))
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "labels"])
        writer.writerows(rows)
    return root / "labels.csv"


@pytest.fixture(scope="session")
def tiny_flat_dataset(tmp_path_factory) -> Path:
    """One folder of 3 class folders (red, green, blue), 10 images each, for graft to split."""
    return _build(tmp_path_factory.mktemp("flat"), {"": 10})


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """graft's cache for the whole session: a temporary folder, never the user's ~/.cache; and the
    session's temporary files (TMPDIR) in the base folder pytest removes.

    Shared on purpose: features and traced graphs of the same images and networks are made once per
    session. A test whose subject is the cache (or which must see a fresh extraction) takes its own
    with `fresh_cache`. Session-scoped so that it is in place before module-scoped fixtures that train.
    """
    import tempfile

    temporary = tmp_path_factory.getbasetemp() / "tmp"
    temporary.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRAFT_CACHE", str(session_cache(tmp_path_factory)))
        # Temporary files of graft and of the processes tests start go inside the session's base
        # folder too, which pytest removes: one a killed process leaves (graft.io.process_folder's,
        # removed at a normal exit) does not pile up in /tmp run after run.
        patch.setenv("TMPDIR", str(temporary))
        patch.setattr(tempfile, "tempdir", str(temporary))
        yield


def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "graft-cache"


@pytest.fixture(scope="session")
def session_graphs(tmp_path_factory) -> Path:
    """The session cache's engines folder, holding Lite0's graph at FAST's input size (traced once)."""
    from graft.backbones import create_backbone
    from graft.engines import compile_onnx

    engines = session_cache(tmp_path_factory) / "engines"
    size = FAST["img_size"]
    compile_onnx(create_backbone("tf_efficientnet_lite0", img_size=size), (3, size, size), engines)
    return engines


@pytest.fixture
def fresh_cache(tmp_path, session_graphs) -> Path:
    """An empty cache folder of the test's own (for --cache-dir / cache_dir=), holding copies of the
    graphs the session has traced so far: its features are extracted afresh, while tracing, seconds a
    network, is not repeated (copies, not links: a test may damage its files). Tests of tracing
    itself take an empty folder instead."""
    import shutil

    folder = tmp_path / "fresh-cache"
    shutil.copytree(session_graphs, folder / "engines", ignore=shutil.ignore_patterns("runs", ".*"))
    return folder


def set_terminal_width(monkeypatch, columns: int) -> None:
    """Make graft's consoles (made once, at import) and any new one draw for `columns` columns."""
    from graft.cli import render

    monkeypatch.setenv("COLUMNS", str(columns))
    for console in (render.console, render.error_console):
        monkeypatch.setattr(console, "width", columns)


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    """Tables are drawn for a 200-column terminal, whatever terminal runs the suite: no test depends
    on its width. Text lines are never wrapped at any width; the tests that check that narrow the
    terminal themselves with `set_terminal_width`."""
    set_terminal_width(monkeypatch, 200)


@pytest.fixture(autouse=True)
def own_unsaved_graphs(monkeypatch, tmp_path_factory):
    """Each test keeps the graphs of its unsaved models (graft.export.cached.unsaved_graph: a graph a
    process made of a model of that content, taken again by a later run of the same content) in a
    folder of its own, as a fresh process would: what a test traces does not depend on which tests ran
    before it in its worker."""
    folder = tmp_path_factory.mktemp("unsaved-graphs")
    monkeypatch.setattr("graft.export.cached._unsaved_folder", lambda: folder)


# A small, fast run: tiny images, one view, no report or audit, silent. Tests that need any trained
# model share `linear_probe_run`; tests that change a run work on their own.
FAST = dict(img_size=32, batch_size=16, head_epochs=2, epochs=1, views=1, workers=0, report=False, audit=False,
            log=None, progress=False)


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> dict:
    """graft.train's options for the tiny timm test_efficientnet from a weights file (random weights,
    the same every session): for tests of what graft does with any backbone's graphs (tracing, templates,
    exports), which Lite0 makes take tens of seconds each. Its weights come from a file, not `none`, so
    that a run treats them as pretrained as it treats Lite0's (a score of unknown images, frozen features)."""
    import torch
    from safetensors.torch import save_file

    from graft.backbones.backbone import build_timm_model

    with torch.random.fork_rng():  # the same weights every session, and the tests' random state left alone
        torch.manual_seed(0)
        state = build_timm_model("test_efficientnet").state_dict()
    path = tmp_path_factory.mktemp("tiny-backbone") / "test_efficientnet.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return {"backbone": "test_efficientnet", "weights": str(path)}


@pytest.fixture(scope="session")
def linear_probe_run(tiny_dataset, tmp_path_factory):
    """A linear-probe run on `tiny_dataset` (graft.train's RunResult), trained once per session."""
    import graft

    out = tmp_path_factory.mktemp("linear-probe-run")
    return graft.train(tiny_dataset, strategy="linear-probe", out=out, name="lp", **FAST)


@contextlib.contextmanager
def uvicorn_in_thread(app):
    """Serve the ASGI `app` with uvicorn in a thread of this process, on 127.0.0.1 and a free port;
    yields its base URL, and stops it on leaving."""
    import threading
    import time

    import uvicorn

    from graft.serve import bind, url

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield url(sock)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
