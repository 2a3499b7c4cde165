"""Slices side by side (graft.engines.sliced) against one run at a time over ONNX Runtime's intra-op
threads, bare and in `ExportedModel.predict_iter`, on real images.

    python benchmarks/sliced.py --data ../shared/datasets/cifar10-dev [--images 3000] [--rounds 5]

A linear-probe Lite0 run on 20 images per class of DATA/train (benchmarks/_runs.py) and its ONNX
export; then `--images` files (DATA's images, repeated). In interleaved rounds, in this process, for
each way of running the same session file: the bare forward pass on uint8 batches of 64 in memory
for 8 s, `predict_iter` over the files (the next batch read in a thread, as graft predicts), the
bare pass for 8 s again. "intra_op": graft until this script was written, one slice after another,
each over all cores (intra-op threads that sleep when idle); "side_by_side": graft now. Prints
images/s and predict over the mean of the two bare passes around it; stores them under "sliced" in
benchmarks/results.json with the top-1 answers compared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _results import machine, store
from _runs import repeated_files, small_probe_export
from read_ahead import bare


def one_at_a_time(model):
    """The same model, its slices run one after another over all cores (graft before graft.engines.sliced)."""
    from graft.engines.sliced import SlicedSession

    copy = type(model)(model.path)
    copy.session = SlicedSession(model.path, output="probabilities", parallel=1)
    return copy


def predict(model, paths: list[Path]) -> tuple[float, list[str]]:
    started = time.perf_counter()
    labels = [answer.label for answer in model.predict_iter(paths, top_k=1)]
    return len(paths) / (time.perf_counter() - started), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()

    from graft.export.exported import ExportedModel

    _, model_file = small_probe_export(options.data, "graft-sliced-")
    paths = repeated_files(options.data, options.images)
    models = {"intra_op": one_at_a_time(ExportedModel(model_file)), "side_by_side": ExportedModel(model_file)}
    rows: dict[str, dict[str, list[float]]] = {name: {"bare": [], "predict": []} for name in models}
    labels: dict[str, list[str]] = {}
    for round_ in range(1, options.rounds + 1):
        for name, model in models.items():
            before = bare(model, seconds=8.0)
            rate, labels[name] = predict(model, paths)
            rows[name]["bare"].append((before + bare(model, seconds=8.0)) / 2)
            rows[name]["predict"].append(rate)
            print(f"round {round_} {name}: bare {rows[name]['bare'][-1]:.1f} img/s, predict {rate:.1f} img/s "
                  f"({rate / rows[name]['bare'][-1]:.2f} x bare)", flush=True)
    medians = {name: {key: statistics.median(values) for key, values in row.items()} for name, row in rows.items()}
    changed = sum(a != b for a, b in zip(labels["intra_op"], labels["side_by_side"]))
    best_bare = max(m["bare"] for m in medians.values())
    for name, m in medians.items():
        print(f"median {name}: bare {m['bare']:.1f}, predict {m['predict']:.1f} img/s "
              f"({m['predict'] / m['bare']:.2f} x its bare, {m['predict'] / best_bare:.2f} x the faster bare)")
    print(f"side by side / intra-op, predict: {medians['side_by_side']['predict'] / medians['intra_op']['predict']:.2f}x; "
          f"{changed} of {len(paths)} top-1 answers differ")
    store({"sliced": {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "python": sys.version.split()[0],
                      "data": str(options.data), "images": options.images, "answers_differing": changed,
                      **{f"{name}_{key}": [round(v, 1) for v in values] for name, row in rows.items()
                         for key, values in row.items()}}})


if __name__ == "__main__":
    main()
