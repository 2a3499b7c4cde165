"""Does choosing the probe's C on a sample of the training images cost accuracy? The check behind
graft.heads.logistic.CV_ROWS (above 20,000 training images, C is cross-validated on a stratified
sample of 20,000; the final fit uses every image).

    python -m benchmarks.calibration.probe_cv_sample [--shared ../shared/datasets] [--cache-dir DIR]
        [--fractions 0.4,0.2] [--seeds 0,1,2] [--key probe_cv_sample]

No shared set has 20,000 images, so the rule is checked scaled down, at the same share or larger:
on flowers-dev (224 px; graft's split of train/ into 400 train and 100 val, test/ 250) and cifar10-dev
(64 px, as graft upsamples nothing below its size; train/ 5,000, test/ 1,000), Lite0 features by
graft's extraction and cache. For each set: C chosen by graft's cross-validation on every training
image (graft.heads.logistic._fit as graft runs it), then on stratified samples of each fraction
(each seed a sample), the final fit always on every training image; test accuracy of each, the C
chosen, and the cross-validation's seconds. 20,000 of 100,000 is a fraction of 0.2. Prints a
markdown table and stores the rows under KEY in benchmarks/results.json. Nothing was tuned on these
sets: the 20,000 is a bound on memory and time, and this checks what it costs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .._results import provenance, record
from .._runs import BACKBONE, SHARED_DATASETS


def features(data: Path, cache_dir: Path, img_size: int | None) -> dict[str, np.ndarray]:
    """train and test features (float32) and labels of the set at `data`, by graft's extraction."""
    from graft.backbones import create_backbone
    from graft.data.discover import find_data
    from graft.features.extract import backbone_features
    from graft.runtime import Runtime, use_cache_dir

    with use_cache_dir(cache_dir):
        splits = find_data(data)
        backbone = create_backbone(BACKBONE, **({"img_size": img_size} if img_size else {}))
        runtime = Runtime.resolve()
        arrays = {}
        for split, samples in (("train", splits.train), ("test", splits.test)):
            found = backbone_features(backbone, samples, split=split, runtime=runtime)
            arrays[f"{split}_x"] = np.asarray(found.features, dtype=np.float32)
            arrays[f"{split}_y"] = np.asarray(found.labels)
    return arrays


def fit(arrays: dict[str, np.ndarray], cv_rows: int | None, seed: int) -> dict:
    """graft's probe fit with C cross-validated on `cv_rows` rows (None: all); its test accuracy."""
    from graft.heads import logistic

    saved = logistic.CV_ROWS
    logistic.CV_ROWS = cv_rows if cv_rows is not None else len(arrays["train_y"])
    try:
        started = time.perf_counter()
        weight, bias, chosen, _ = logistic._fit(arrays["train_x"].copy(), arrays["train_y"], None, seed)
        seconds = time.perf_counter() - started
    finally:
        logistic.CV_ROWS = saved
    predicted = (arrays["test_x"].astype(np.float64) @ weight.T + bias).argmax(axis=1)
    return {"C": chosen, "test": float((predicted == arrays["test_y"]).mean()), "fit_s": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=SHARED_DATASETS)
    parser.add_argument("--cache-dir", type=Path, default=None, help="graft's cache (default: graft's own)")
    parser.add_argument("--fractions", default="0.4,0.2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--key", default="probe_cv_sample")
    args = parser.parse_args()
    from graft.runtime import cache_root

    about = provenance(parameters={**vars(args), "shared": str(args.shared), "cache_dir": str(args.cache_dir)})
    fractions = [float(value) for value in args.fractions.split(",")]
    seeds = [int(value) for value in args.seeds.split(",")]
    rows = []
    for name, size in (("flowers-dev", None), ("cifar10-dev", 64)):
        arrays = features(args.shared.resolve() / name, args.cache_dir or cache_root(), size)
        count = len(arrays["train_y"])
        full = fit(arrays, None, 0)
        rows.append({"data": name, "train": count, "cv rows": count, "seed": "-", **full})
        print(rows[-1], flush=True)
        for fraction in fractions:
            for seed in seeds:
                rows.append({"data": name, "train": count, "cv rows": int(count * fraction), "seed": seed,
                             **fit(arrays, int(count * fraction), seed)})
                print(rows[-1], flush=True)
    header = "| data | train | C chosen on | seed | C | test accuracy | fit s |\n|---|---|---|---|---|---|---|"
    print("\n" + header)
    for row in rows:
        print(f"| {row['data']} | {row['train']:,} | {row['cv rows']:,} | {row['seed']} | {row['C']:g} | "
              f"{row['test']:.1%} | {row['fit_s']} |")
    record(args.key, {"rows": rows}, about)


if __name__ == "__main__":
    main()
