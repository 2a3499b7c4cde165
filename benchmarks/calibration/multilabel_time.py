"""Do multi-label runs take more time than single-label runs on the same images (issue 25)?

    python -m benchmarks.calibration.multilabel_time [--shared ../shared/datasets] [--rounds 3]
        [--strategy linear-probe] [--img-size PX] [--epochs N] [--key multilabel_time]

tags-dev's 1,000 training mosaics, given twice as a label file of absolute paths: with every label
of each image (multi-label, as tags-dev ships them) and with its first label alone (single-label).
`graft.train(FILE, strategy=STRATEGY)` as typed (audit and report on) into one feature cache of its
own: one run of each first (the extraction, shared: the same files), then ROUNDS rounds of one run
of each, alternating which goes first, each round with a seed of its own (so its split, probe fit,
audit and report are computed afresh, not read from the cache; the features are the same files');
each round's multi-label / single-label wall time, the median round reported, with each run's own
timings (graft.json's). Prints the rows and stores them under
KEY in benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

from .._results import provenance, record
from .._runs import SHARED_DATASETS


def label_files(tags: Path, folder: Path) -> dict[str, Path]:
    with open(tags / "train.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    files = {"multilabel": folder / "multi.csv", "single": folder / "single.csv"}
    for task, path in files.items():
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "labels" if task == "multilabel" else "label"])
            for row in rows:
                labels = row["labels"].split()
                writer.writerow([str((tags / row["path"]).resolve()), " ".join(labels) if task == "multilabel" else labels[0]])
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED_DATASETS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--strategy", default="linear-probe")
    parser.add_argument("--img-size", type=int, default=None, help="--img-size of every run (default: the backbone's)")
    parser.add_argument("--epochs", type=int, default=None, help="--epochs of every run (default: graft's)")
    parser.add_argument("--key", default="multilabel_time")
    args = parser.parse_args()
    import graft

    about = provenance(parameters={**vars(args), "shared": str(args.shared)})
    with tempfile.TemporaryDirectory(prefix="graft-multilabel-time-") as work:
        folder = Path(work)
        files = label_files(args.shared / "tags-dev", folder)

        def run(task: str, name: str, seed: int = 0) -> dict:
            started = time.perf_counter()
            options = {key: value for key, value in (("img_size", args.img_size), ("epochs", args.epochs)) if value}
            trained = graft.train(files[task], strategy=args.strategy, out=folder / "runs", name=name, seed=seed,
                                  cache_dir=folder / "cache", progress=False, log=None, **options)
            return {"task": trained.record.task, "seconds": round(time.perf_counter() - started, 2),
                    "timings": {key: round(value, 2) for key, value in trained.metrics.timings.items()}}

        first = {task: run(task, f"first-{task}") for task in files}
        rounds = []
        for index in range(args.rounds):
            order = list(files) if index % 2 == 0 else list(reversed(files))
            done = {task: run(task, f"round{index}-{task}", seed=index + 1) for task in order}
            rounds.append({"order": order, **done, "ratio": round(done["multilabel"]["seconds"] / done["single"]["seconds"], 3)})
            print(f"round {index + 1}: multi-label {done['multilabel']['seconds']} s, single-label "
                  f"{done['single']['seconds']} s: {rounds[-1]['ratio']}x")
    median = round(statistics.median(entry["ratio"] for entry in rounds), 3)
    print(f"multi-label / single-label, {args.strategy} as typed, median of {args.rounds} rounds: {median}x "
          f"(first runs, extracting: {first['multilabel']['seconds']} s and {first['single']['seconds']} s)")
    record(args.key, {"median_ratio": median, "rounds": rounds, "first": first}, about)


if __name__ == "__main__":
    main()
