"""Every way of predicting gives the same top-1: issue 23's acceptance, counted on every test image.

1. A linear probe, Lite0 at its own 224 px: `graft train` on the first PER_CLASS images of each class
   of DATA/train (0: all of them; graft splits off its own val), then `graft export` (model.onnx).
2. Every image of DATA/test (or its first IMAGES) predicted each way:
   - `graft.load(RUN).predict` in this process: the reference;
   - `graft predict RUN DATA/test --csv` and `graft predict model.onnx DATA/test --csv`, as a user types them;
   - `graft.load("model.onnx").predict`;
   - `graft serve RUN` (a real server on a free port), the images POSTed 32 to a request;
   - and, beside them, `graft.load(RUN, engine="torch").predict` (torch fp32, the network itself).
3. For each way: how many top-1 answers differ from the reference, the largest difference of a
   top-1 probability, its test accuracy, and the engine that computed it.

    python -m benchmarks.prediction_agreement          # flowers-dev (all its train) and cifar10-dev (100 a class)
    python -m benchmarks --only agreement --data ../shared/datasets/flowers-dev --set agreement.per_class=0
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ._runs import (
    SHARED_DATASETS,
    BenchmarkFailed,
    Context,
    Parameter,
    class_folders,
    environment,
    image_files,
    run_graft,
    start_graft,
)

PARAMETERS = {
    "per_class": Parameter(100, 10, "training images per class of DATA/train (0: all)"),
    "images": Parameter(0, 40, "test images predicted (0: every image of DATA/test)"),
}
REQUEST_IMAGES = 32  # graft serve's --max-images default


def run(context: Context, *, per_class: int, images: int) -> dict:
    run_dir, model_onnx = _trained(context, per_class)
    tests = [path.resolve() for path in image_files(context.data / "test")]
    tests = tests[:images] if images else tests
    folder = _linked(tests, context.work / "test")  # one argument for the CLI, the same files in the same order
    truth = [path.parent.name for path in tests]
    with environment(context.env):
        import graft

        reference = _top1(graft.load(run_dir).predict(tests, top_k=1))
        answers = {
            "graft predict RUN": _cli(run_dir, folder, tests, context),
            "graft predict model.onnx": _cli(model_onnx, folder, tests, context),
            "graft.load(model.onnx).predict": _top1(graft.load(model_onnx).predict(tests, top_k=1)),
            "graft serve RUN": _served(run_dir, tests, context),
            "graft.load(RUN, engine=torch).predict": _top1(graft.load(run_dir, engine="torch").predict(tests, top_k=1)),
        }
        engines = {"graft.load(RUN).predict": graft.load(run_dir).engine, "graft.load(RUN, engine=torch).predict": "torch"}
    figures: dict = {"images": len(tests), "data": str(context.data), "train_per_class": per_class or "all",
                     "reference": "graft.load(RUN).predict", "reference_engine": engines["graft.load(RUN).predict"],
                     "reference_accuracy": _accuracy(reference, truth), "ways": {}}
    for name, answer in answers.items():
        differ = sum(a[0] != r[0] for a, r in zip(answer, reference))
        figures["ways"][name] = {
            "top1_differ": differ,
            "max_top1_probability_difference": max((abs(a[1] - r[1]) for a, r in zip(answer, reference)), default=0.0),
            "accuracy": _accuracy(answer, truth),
        }
        context.log(f"{name}: {differ} of {len(tests)} top-1 answers differ from graft.load(RUN).predict")
    figures["all_agree"] = all(way["top1_differ"] == 0 for way in figures["ways"].values())
    return figures


def _trained(context: Context, per_class: int) -> tuple[Path, Path]:
    """The linear probe's run folder and its model.onnx (graft train, then graft export)."""
    images = context.work / "train"
    for folder in class_folders(context.data / "train"):
        files = image_files(folder)
        _linked(files[:per_class] if per_class else files, images / folder.name)
    run_graft("train", images, "--strategy", "linear-probe", "--no-report", "--no-audit", "--out", context.work,
              "--name", "probe", env=context.env)
    run_dir = context.work / "probe"
    run_graft("export", run_dir, "--out", context.work / "model.onnx", env=context.env)
    return run_dir, context.work / "model.onnx"


def _linked(files: list[Path], folder: Path) -> Path:
    """`folder` holding links to `files`, named so that a sorted walk finds them in the same order."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, source in enumerate(files):
        (folder / f"{index:06d}{source.suffix.lower()}").symlink_to(source.resolve())
    return folder


def _top1(predictions) -> list[tuple[str, float]]:
    return [(p.label, p.probability) for p in predictions]


def _accuracy(answers: list[tuple[str, float]], truth: list[str]) -> float:
    return round(sum(label == true for (label, _), true in zip(answers, truth)) / max(1, len(truth)), 4)


def _cli(model: Path, folder: Path, tests: list[Path], context: Context) -> list[tuple[str, float]]:
    """`graft predict MODEL FOLDER --csv`: its top-1 answers, in the order of `tests`."""
    out = context.work / f"{model.name}.csv"
    run_graft("predict", model, folder, "--csv", out, "--top-k", "1", env=context.env)
    with out.open(newline="") as handle:
        rows = {Path(row["path"]).name: row for row in csv.DictReader(handle)}
    if len(rows) != len(tests):
        raise BenchmarkFailed(f"graft predict {model} answered {len(rows)} of {len(tests)} images")
    return [(rows[name]["label"], float(rows[name]["probability"]))
            for name in (f"{index:06d}{path.suffix.lower()}" for index, path in enumerate(tests))]


def _served(run_dir: Path, tests: list[Path], context: Context) -> list[tuple[str, float]]:
    """`graft serve RUN --port 0`, the images POSTed REQUEST_IMAGES at a time: the top-1 answers."""
    import httpx

    server = start_graft("serve", run_dir, "--port", "0", env=context.env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        url = _address(server)
        answers: list[tuple[str, float]] = []
        with httpx.Client(timeout=600) as client:
            for start in range(0, len(tests), REQUEST_IMAGES):
                chunk = tests[start : start + REQUEST_IMAGES]
                files = [("file", (str(index), path.read_bytes())) for index, path in enumerate(chunk)]
                response = client.post(url + "predict?top_k=1", files=files)
                if response.status_code != 200:
                    raise BenchmarkFailed(f"graft serve answered {response.status_code}: {response.text[:500]}")
                answers += [(a["label"], a["probability"]) for a in response.json()["predictions"]]
        return answers
    finally:
        server.terminate()
        server.wait(timeout=60)


def _address(server: subprocess.Popen) -> str:
    """The http://HOST:PORT/ that `graft serve` prints once it listens."""
    assert server.stdout is not None
    seen = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        if not line and server.poll() is not None:
            break
        seen.append(line)
        found = re.search(r"(http://[^\s/]+/)", line)
        if found:
            return found.group(1)
    raise BenchmarkFailed("graft serve did not start: " + "".join(seen)[-2000:])


def main() -> None:
    """Both shared datasets, as the issue's acceptance names them: the figures as JSON."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", help="a folder with train/ and test/ (repeatable)")
    parser.add_argument("--per-class", type=int, help="training images per class (default: flowers all, others 100)")
    parser.add_argument("--images", type=int, default=0, help="test images predicted (0: all)")
    options = parser.parse_args()
    sets = options.data or [SHARED_DATASETS / "flowers-dev", SHARED_DATASETS / "cifar10-dev"]
    results = {}
    for data in sets:
        per_class = options.per_class if options.per_class is not None else (0 if "flowers" in data.name else 100)
        with tempfile.TemporaryDirectory(prefix="graft-agreement-") as tmp:
            work = Path(tmp)
            context = Context(data=data, work=work, shared=work, quick=False, env={"GRAFT_CACHE": str(work / "cache")})
            print(f"{data.name}: per_class={per_class or 'all'}, images={options.images or 'all'}", flush=True)
            results[data.name] = run(context, per_class=per_class, images=options.images)
    print(json.dumps(results, indent=2))
    sys.exit(0 if all(figures["all_agree"] for figures in results.values()) else 1)


if __name__ == "__main__":
    main()
