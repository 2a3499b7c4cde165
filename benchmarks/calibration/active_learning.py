"""What to label next (issue 26): does labelling graft suggest's images help more than labelling at random?

    python -m benchmarks.calibration.active_learning [--shared ../shared/datasets] [--cache-dir DIR]
        [--start 10] [--batch 100] [--rounds 5] [--repeats 3] [--key active_learning]

cifar10-dev at 224 px (32 px resized up, as graft does), Lite0 with its ImageNet weights, features by
graft's extraction and cache (graft.features, the engine graft chooses), extracted once. Of the 5,000
train images, 100 per class (drawn once, seed 12345) are held out as val; the other 4,000 are the
pool of unlabelled images. Each repeat (seeds 0, 1, 2) starts from `--start` labelled images per class
drawn from the pool, then labels `--batch` more per round for `--rounds` rounds, chosen by each of
graft.suggest's METHODS and at random (the same start for every method of a repeat); after each
round graft's linear probe (graft.heads.logistic's fit: standardised features, C by 5-fold
cross-validation) is refitted on the labelled images and scored on val and on cifar10-dev's 1,000
test images.

The rule: graft.suggest's default is the method with the best mean val accuracy over the rounds and
repeats (val: held-out train images, never test). Test then reports it against random: its accuracy
after each round, and how many labels it needed to reach random's final accuracy (interpolated
linearly between rounds). Last, one labelling round on 1,000 unlabelled images is timed after
extraction: graft.suggest on them, and the probe refitted with the 100 suggested images added.
docs/benchmarks.md, "What to label next", has the tables, the machine and the commit.
Prints markdown tables and stores them under KEY (default "active_learning") in benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from graft.suggest import DEFAULT_METHOD, METHODS, suggest

from .._results import provenance, record
from .._runs import BACKBONE, SHARED_DATASETS, image_files

RANDOM = "random"
VAL_PER_CLASS = 100
VAL_SEED = 12345


def features(shared: Path, cache_dir: Path) -> dict[str, np.ndarray]:
    """cifar10-dev's train (5,000) and test (1,000) features (N x 1280, float32) and labels, Lite0 at
    224 px by graft's extraction and cache, the class names and the extraction's seconds."""
    from graft.backbones import create_backbone
    from graft.data.discover import Sample
    from graft.features.extract import backbone_features
    from graft.runtime import Runtime, use_cache_dir

    started = time.perf_counter()
    arrays: dict[str, np.ndarray] = {}
    with use_cache_dir(cache_dir):
        backbone = create_backbone(BACKBONE)
        runtime = Runtime.resolve()
        for split in ("train", "test"):
            folders = sorted(path for path in (shared / "cifar10-dev" / split).iterdir() if path.is_dir())
            samples = sorted((Sample(path, index) for index, folder in enumerate(folders) for path in image_files(folder)),
                             key=lambda sample: str(sample.path))
            found = backbone_features(backbone, samples, split=split, runtime=runtime)
            arrays[f"{split}_x"] = np.asarray(found.features, dtype=np.float32)
            arrays[f"{split}_y"] = np.asarray(found.labels)
        arrays["classes"] = np.array([folder.name for folder in folders])
    arrays["seconds"] = np.array(time.perf_counter() - started)
    return arrays


def per_class(labels: np.ndarray, rows: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` of `rows` of each class (labels[rows]), drawn by `rng`, sorted."""
    return np.sort(np.concatenate([rng.choice(rows[labels[rows] == label], count, replace=False)
                                   for label in np.unique(labels[rows])]))


def probe(x: np.ndarray, y: np.ndarray, seed: int):
    """graft's linear probe fitted on (x, y): a function from features to probabilities."""
    from graft.heads.logistic import _fit

    weight, bias, _, _ = _fit(x, y, None, seed)

    def probabilities(rows: np.ndarray) -> np.ndarray:
        logits = rows @ weight.T + bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    return probabilities


def simulate(data: dict[str, np.ndarray], pool: np.ndarray, val: np.ndarray, *, method: str, seed: int, start: int,
             batch: int, rounds: int, log) -> list[dict]:
    """One repeat of one method: after the start and after each round, the labels, val and test accuracy
    and the seconds of the suggestion and of the fit."""
    x, y, classes = data["train_x"], data["train_y"], [str(name) for name in data["classes"]]
    rng = np.random.default_rng(seed)
    labelled = per_class(y, pool, start, rng)
    chooser = np.random.default_rng(seed + 1000)  # random's draws
    rows = []
    for round_ in range(rounds + 1):
        started = time.perf_counter()
        predict = probe(x[labelled], y[labelled], seed)
        fitted = time.perf_counter() - started
        row = {"method": method, "seed": seed, "round": round_, "labels": int(len(labelled)),
               "val_accuracy": round(float(np.mean(predict(x[val]).argmax(axis=1) == y[val])), 4),
               "test_accuracy": round(float(np.mean(predict(data["test_x"]).argmax(axis=1) == data["test_y"])), 4),
               "fit_seconds": round(fitted, 2)}
        if round_ < rounds:
            unlabelled = np.setdiff1d(pool, labelled)
            started = time.perf_counter()
            if method == RANDOM:
                chosen = chooser.choice(unlabelled, batch, replace=False)
            else:
                found = suggest(x[labelled], x[unlabelled], predict(x[unlabelled]), classes=classes, count=batch,
                                method=method)
                chosen = unlabelled[[item.index for item in found]]
            row["suggest_seconds"] = round(time.perf_counter() - started, 3)
            labelled = np.sort(np.concatenate([labelled, chosen]))
        rows.append(row)
        log(f"{method} seed {seed} round {round_}: {row['labels']} labels, val {row['val_accuracy']:.1%}, "
            f"test {row['test_accuracy']:.1%} (fit {fitted:.1f} s)")
    return rows


def curve(rows: list[dict], method: str, split: str) -> list[float]:
    """Mean accuracy on `split` after each round (the start first) over the repeats."""
    mine = [row for row in rows if row["method"] == method]
    return [round(float(np.mean([row[f"{split}_accuracy"] for row in mine if row["round"] == r])), 4)
            for r in sorted({row["round"] for row in mine})]


def per_seed(rows: list[dict], method: str, labels: list[int]) -> list[dict]:
    """For each repeat: the method's test curve, random's, and the labels the method needed to reach
    random's final test accuracy in that repeat."""
    result = []
    for seed in sorted({row["seed"] for row in rows}):
        mine = [row for row in rows if row["seed"] == seed]
        ours = curve(mine, method, "test")
        chance = curve(mine, RANDOM, "test")
        result.append({"seed": seed, "method": ours, "random": chance,
                       "labels_to_reach_random_final": labels_to_reach(labels, ours, chance[-1])})
    return result


def labels_to_reach(labels: list[int], accuracies: list[float], target: float) -> float | None:
    """The labels at which a curve first reaches `target`, interpolated linearly between rounds; None if never."""
    for index, accuracy in enumerate(accuracies):
        if accuracy >= target:
            if index == 0:
                return float(labels[0])
            before = accuracies[index - 1]
            share = (target - before) / (accuracy - before)
            return round(labels[index - 1] + share * (labels[index] - labels[index - 1]), 1)
    return None


def timed_round(data: dict[str, np.ndarray], pool: np.ndarray, labelled_count: int, *, batch: int, method: str,
                unlabelled_count: int = 1000) -> dict:
    """One labelling round after extraction: graft.suggest over `unlabelled_count` pool images, the probe
    refitted on `labelled_count` labelled images plus the `batch` suggested (seconds, best of 3)."""
    x, y, classes = data["train_x"], data["train_y"], [str(name) for name in data["classes"]]
    rng = np.random.default_rng(7)
    labelled = per_class(y, pool, labelled_count // len(classes), rng)
    unlabelled = rng.choice(np.setdiff1d(pool, labelled), unlabelled_count, replace=False)
    predict = probe(x[labelled], y[labelled], 0)
    probabilities = predict(x[unlabelled])
    suggest_times, fit_times = [], []
    for _ in range(3):
        started = time.perf_counter()
        found = suggest(x[labelled], x[unlabelled], probabilities, classes=classes, count=batch, method=method)
        suggest_times.append(time.perf_counter() - started)
        grown = np.concatenate([labelled, unlabelled[[item.index for item in found]]])
        started = time.perf_counter()
        probe(x[grown], y[grown], 0)
        fit_times.append(time.perf_counter() - started)
    return {"unlabelled": unlabelled_count, "labelled_before": int(len(labelled)), "suggested": batch,
            "method": method, "suggest_seconds": round(min(suggest_times), 3), "fit_seconds": round(min(fit_times), 2),
            "round_seconds": round(min(suggest_times) + min(fit_times), 2)}


def table(rows: list[dict], methods: list[str], split: str, labels: list[int]) -> str:
    lines = ["| method | " + " | ".join(f"{count} labels" for count in labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(f"{value:.1%}" for value in curve(rows, method, split)) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED_DATASETS)
    parser.add_argument("--cache-dir", type=Path, default=None, help="graft's cache (default: graft's own)")
    parser.add_argument("--start", type=int, default=10, help="labelled images per class at the start")
    parser.add_argument("--batch", type=int, default=100, help="images labelled per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--key", default="active_learning")
    args = parser.parse_args()
    from graft.runtime import cache_root

    about = provenance(parameters={**vars(args), "shared": str(args.shared), "cache_dir": str(args.cache_dir)})
    started = time.perf_counter()
    data = features(args.shared.resolve(), args.cache_dir or cache_root())
    print(f"features: {len(data['train_x'])} train, {len(data['test_x'])} test ({float(data['seconds']):.0f} s)",
          flush=True)
    everything = np.arange(len(data["train_y"]))
    val = per_class(data["train_y"], everything, VAL_PER_CLASS, np.random.default_rng(VAL_SEED))
    pool = np.setdiff1d(everything, val)
    methods = [RANDOM, *METHODS]
    rows = [row for seed in range(args.repeats) for method in methods
            for row in simulate(data, pool, val, method=method, seed=seed, start=args.start, batch=args.batch,
                                rounds=args.rounds, log=lambda message: print(f"  {message}", flush=True))]
    labels = [args.start * len(data["classes"]) + args.batch * r for r in range(args.rounds + 1)]
    val_means = {method: round(float(np.mean(curve(rows, method, "val")[1:])), 4) for method in methods}
    chosen = max(METHODS, key=lambda method: val_means[method])
    final_random = curve(rows, RANDOM, "test")[-1]
    reach = {method: labels_to_reach(labels, curve(rows, method, "test"), final_random) for method in methods}
    print(f"\n## Val accuracy (held-out train images), mean of {args.repeats}\n\n{table(rows, methods, 'val', labels)}\n\n"
          "mean over the rounds: " + ", ".join(f"{m} {v:.1%}" for m, v in val_means.items())
          + f"\n\nchosen on val: {chosen} (graft.suggest's DEFAULT_METHOD: {DEFAULT_METHOD})"
          f"\n\n## Test accuracy (cifar10-dev test), mean of {args.repeats}\n\n{table(rows, methods, 'test', labels)}\n\n"
          f"labels to reach random's final test accuracy ({final_random:.1%}): "
          + ", ".join(f"{m} {v if v is not None else 'not reached'}" for m, v in reach.items()), flush=True)
    seeds = per_seed(rows, chosen, labels)
    print(f"\n## Each repeat: {chosen} against random (test)\n\n| seed | {chosen} | random | labels to reach random's "
          "final |\n|---|---|---|---|\n" + "\n".join(
              f"| {row['seed']} | {' '.join(f'{v:.1%}' for v in row['method'])} | "
              f"{' '.join(f'{v:.1%}' for v in row['random'])} | {row['labels_to_reach_random_final']} |" for row in seeds),
          flush=True)
    timing = timed_round(data, pool, labels[-1], batch=args.batch, method=DEFAULT_METHOD)
    print(f"\none labelling round on {timing['unlabelled']:,} unlabelled images ({timing['labelled_before']} labelled): "
          f"suggest {timing['suggest_seconds']} s, refit {timing['fit_seconds']} s")
    seconds = round(time.perf_counter() - started, 1)
    print(f"\n{seconds} s in all")
    record(args.key, {"chosen_on_val": chosen, "default_method": DEFAULT_METHOD, "labels": labels,
                      "val_curves": {m: curve(rows, m, "val") for m in methods}, "val_means": val_means,
                      "test_curves": {m: curve(rows, m, "test") for m in methods},
                      "random_final_test": final_random, "labels_to_reach_random_final": reach, "each_repeat": seeds,
                      "round_timing": timing, "rows": rows,
                      "images": {"pool": int(len(pool)), "val": int(len(val)), "test": int(len(data["test_y"]))},
                      "feature_seconds": round(float(data["seconds"]), 1), "seconds": seconds}, about)


if __name__ == "__main__":
    main()
