"""issue 25's reference: a one-vs-rest logistic probe on tags-dev written by hand, outside graft's
training, beside what `graft train` gives, in one run.

    python -m benchmarks.calibration.multilabel_reference [--shared ../shared/datasets] [--key multilabel_reference]

The hand-written probe: Lite0 with its real ImageNet weights (graft.backbones.create_backbone only
builds the network), each image prepared by hand with Pillow (bicubic, mean/std 0.5) in two ways:
`crop` (timm's eval transform: the short side to 256, the centre 224 x 224, which cuts 12.5% of a
mosaic's border) and `whole` (the whole image resized to 224 x 224); the pooled features of
train.csv (all 1,000 images) and test.csv (300); scikit-learn's StandardScaler and one
LogisticRegression per class (OneVsRestClassifier), C chosen among 0.01-10 by 5-fold cross-validated
macro average precision on train; each class's threshold the best F1 over its 5-fold out-of-fold
probabilities on train; test mAP (macro), exact match and macro F1 at those thresholds.

Beside it, `graft train DATA --strategy S` for each S in --strategies (default: auto), each a
process of its own with its own feature cache, its test figures read from metrics.json and its wall
time measured. Prints a table and stores the rows under KEY in benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from .._results import provenance, record
from .._runs import SHARED_DATASETS, run_graft

SIZE, CROP_FROM = 224, 256
CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def _read(csv_path: Path) -> tuple[list[Path], list[list[str]]]:
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [csv_path.parent / row["path"] for row in rows], [row["labels"].split() for row in rows]


def _pixels(path: Path, how: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as opened:
        image = opened.convert("RGB")
    if how == "whole":
        image = image.resize((SIZE, SIZE), Image.BICUBIC)
    else:
        width, height = image.size
        scale = CROP_FROM / min(width, height)
        image = image.resize((round(width * scale), round(height * scale)), Image.BICUBIC)
        left, top = (image.width - SIZE) // 2, (image.height - SIZE) // 2
        image = image.crop((left, top, left + SIZE, top + SIZE))
    return (np.asarray(image, dtype=np.float32) / 255.0 - 0.5) / 0.5


def _features(paths: list[Path], how: str) -> np.ndarray:
    import torch

    from graft.backbones import create_backbone

    backbone = create_backbone("tf_efficientnet_lite0").eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), 32):
            batch = np.stack([_pixels(path, how) for path in paths[start : start + 32]]).transpose(0, 3, 1, 2)
            out.append(backbone(torch.from_numpy(np.ascontiguousarray(batch))).numpy())
    return np.concatenate(out)


def _best_f1_thresholds(targets: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    from sklearn.metrics import precision_recall_curve

    chosen = []
    for column in range(targets.shape[1]):
        precision, recall, cuts = precision_recall_curve(targets[:, column], probabilities[:, column])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        chosen.append(cuts[int(np.argmax(f1))])
    return np.array(chosen)


def hand_written_probe(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, f1_score
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model(c: float):
        return make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000)))

    folds = KFold(5, shuffle=True, random_state=0)
    out_of_fold = {c: cross_val_predict(model(c), train, y_train, cv=folds, method="predict_proba") for c in CS}
    c = max(CS, key=lambda value: average_precision_score(y_train, out_of_fold[value], average="macro"))
    thresholds = _best_f1_thresholds(y_train, out_of_fold[c])
    probabilities = model(c).fit(train, y_train).predict_proba(test)
    given = probabilities >= thresholds
    return {"C": c, "test mAP": round(float(average_precision_score(y_test, probabilities, average="macro")), 3),
            "exact match": round(float((given == y_test.astype(bool)).all(axis=1).mean()), 3),
            "macro F1": round(float(f1_score(y_test, given, average="macro")), 3)}


def graft_run(data: Path, work: Path, strategy: str) -> dict:
    started = time.perf_counter()
    run_graft("train", data, "--out", work / "runs", "--name", strategy, "--cache-dir", work / f"cache-{strategy}",
              *(["--strategy", strategy] if strategy != "auto" else []), "--no-report")
    seconds = time.perf_counter() - started
    folder = work / "runs" / strategy
    metrics = json.loads((folder / "metrics.json").read_text())
    chosen = json.loads((folder / "graft.json").read_text())["strategy"]
    test = metrics["evaluations"]["test"]
    return {"way": f"graft train --strategy {strategy}" + (f" (ran {chosen})" if strategy == "auto" else ""),
            "test mAP": round(test["map_macro"], 3), "exact match": round(test["exact_match"], 3),
            "macro F1": round(float(np.mean([row["f1"] for row in test["per_class"].values() if row["support"]])), 3),
            "val mAP": round(metrics["val_accuracy"], 3), "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED_DATASETS)
    parser.add_argument("--strategies", default="auto")
    parser.add_argument("--skip-reference", action="store_true", help="only the graft runs")
    parser.add_argument("--key", default="multilabel_reference")
    args = parser.parse_args(argv)
    about = provenance(parameters={"strategies": args.strategies, "reference": not args.skip_reference})
    data = args.shared / "tags-dev"
    rows = []
    if not args.skip_reference:
        (train_paths, train_labels), (test_paths, test_labels) = _read(data / "train.csv"), _read(data / "test.csv")
        classes = sorted({label for labels in train_labels + test_labels for label in labels})
        y_train, y_test = ([[name in labels for name in classes] for labels in split]
                           for split in (train_labels, test_labels))
        for how in ("crop", "whole"):
            started = time.perf_counter()
            train, test = _features(train_paths, how), _features(test_paths, how)
            result = hand_written_probe(train, np.array(y_train, dtype=int), test, np.array(y_test, dtype=int))
            rows.append({"way": f"hand-written probe, {how}", **result, "seconds": round(time.perf_counter() - started, 1)})
            print(rows[-1], flush=True)
    with tempfile.TemporaryDirectory(prefix="graft-multilabel-") as work:
        for strategy in args.strategies.split(","):
            rows.append(graft_run(data, Path(work), strategy))
            print(rows[-1], flush=True)
    columns = ["way", "C", "test mAP", "exact match", "macro F1", "val mAP", "seconds"]
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(column, "")) for column in columns) + " |")
    record(args.key, {"rows": rows}, about)


if __name__ == "__main__":
    main()
