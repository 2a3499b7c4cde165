"""The audit's label check on several labels per image: does it find labels removed or added?

    python -m benchmarks.calibration.multilabel_audit [--shared ../shared/datasets] [--cache-dir DIR]

tags-dev with Lite0's 224 px features (graft's extraction and cache). A share of the (image, label)
pairs is corrupted at random: a label removed from an image that has it, or added to one that has
not (5% of images, half each way). graft.audit.checks.out_of_fold_label_probabilities judges every
pair at each C; for each C this prints how well its certainty separates corrupted pairs from the
others (AUROC) and, at confidence 0.9, 0.8 and 0.7, how many pairs it flags and how many of those
are corrupted (precision) and how many corrupted pairs it flags (recall).

Tuned on: tags-dev's train.csv (1,000 images, seed 0 corruption). Checked on: tags-dev's test.csv
(300 images from other photos, seed 1 corruption), read as a train split of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from .._results import provenance, record
from .._runs import SHARED_DATASETS

CS = (0.01, 0.03, 0.1, 0.3, 1.0)
CONFIDENCES = (0.9, 0.8, 0.7)


def corrupt(splits, *, share: float, seed: int):
    """`splits` with `share` of its train+val images given one label more or one fewer, and the set of
    corrupted (path, class) pairs."""
    rng = np.random.default_rng(seed)
    classes = len(splits.classes)
    changed: set[tuple[str, int]] = set()

    def change(samples):
        out = []
        for sample in samples:
            labels = set(sample.labels)
            if rng.random() < share:
                remove = rng.random() < 0.5 and len(labels) > 1
                column = int(rng.choice(sorted(labels))) if remove else int(rng.choice(
                    [c for c in range(classes) if c not in labels]))
                labels.symmetric_difference_update({column})
                changed.add((str(sample.path), column))
            out.append(dataclasses.replace(sample, labels=tuple(sorted(labels))))
        return out

    return dataclasses.replace(splits, train=change(splits.train), val=change(splits.val)), changed


def judge(splits, features, changed, *, seed: int) -> list[dict]:
    from sklearn.metrics import roc_auc_score

    from graft.audit.checks import out_of_fold_label_probabilities

    rows = []
    for C in CS:
        probabilities, targets, located = out_of_fold_label_probabilities(splits, features, seed=seed, C=C)
        sure = np.where(targets.astype(bool), 1.0 - probabilities, probabilities)
        truth = np.array([[(str(path), column) in changed for column in range(targets.shape[1])] for path, _ in located])
        judged = ~np.isnan(sure)
        row = {"C": C, "pairs": int(judged.sum()), "corrupted": int(truth[judged].sum()),
               "AUROC": round(float(roc_auc_score(truth[judged], sure[judged])), 3)}
        for confidence in CONFIDENCES:
            flagged = judged & (sure >= confidence)
            hits = int((flagged & truth).sum())
            row[f"flagged@{confidence}"] = int(flagged.sum())
            row[f"precision@{confidence}"] = round(hits / max(1, int(flagged.sum())), 3)
            row[f"recall@{confidence}"] = round(hits / max(1, int(truth.sum())), 3)
        rows.append(row)
        print(row, flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    from graft.audit.pipeline import plain_features
    from graft.runtime import Runtime, use_cache_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED_DATASETS)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--share", type=float, default=0.05)
    parser.add_argument("--key", default="multilabel_audit")
    args = parser.parse_args(argv)
    about = provenance(parameters={"share": args.share, "C": list(CS), "confidences": list(CONFIDENCES)})
    runtime = Runtime.resolve(progress=False)
    results = {}
    with tempfile.TemporaryDirectory() as scratch, use_cache_dir(args.cache_dir or Path(scratch)):
        for name, source, seed in (("tuned: train.csv", "train.csv", 0), ("checked: test.csv", "test.csv", 1)):
            data = args.shared / "tags-dev"
            if source == "test.csv":  # the test images as a data set of their own (train and val)
                data = Path(scratch) / "test-as-train"
                data.mkdir()
                (data / "test").symlink_to(args.shared / "tags-dev" / "test")
                (data / "train.csv").write_text((args.shared / "tags-dev" / "test.csv").read_text())
            splits, features, _ = plain_features(data, backbone="tf_efficientnet_lite0", runtime=runtime, seed=0)
            features.pop("test", None)
            corrupted, changed = corrupt(splits, share=args.share, seed=seed)
            print(name, f"{len(changed)} pairs corrupted", flush=True)
            results[name] = judge(corrupted, features, changed, seed=0)
    record(args.key, results, about)


if __name__ == "__main__":
    main()
