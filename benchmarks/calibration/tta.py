"""Does the mirrored view help a linear probe? Test-time augmentation measured on real photos.

    python -m benchmarks.calibration.tta [--shared ../shared/datasets]

For each data set, Lite0's pooled features of every image and of its horizontal mirror image (one
pass each, ONNX Runtime, fp32), then graft's logistic regression (C by 5-fold cross-validation on
train) three ways, scored on the test split:
- plain: fitted and scored on the plain view (graft's linear probe today);
- TTA at test: fitted on the plain view, scored on the mean of the two views' probabilities
  (what `graft predict --tta` and `graft evaluate --tta` do);
- mean features: fitted and scored on the mean of the two views' features (costs the mirror pass
  in training too).
Data: flowers-dev (500 train, 250 test, 224 px), cifar10-dev (5,000 train, 1,000 test) at 64 and
224 px. Prints a markdown table; stores it under "tta" in benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from graft.backbones import create_backbone
from graft.data.dataset import ImageDataset
from graft.data.discover import find_eval_data
from graft.data.transforms import eval_transform
from graft.features import FeatureSet
from graft.heads import create_head, final_linear
from graft.heads.logistic import fit_logistic_head
from graft.runtime import Runtime

from .._results import provenance, record
from .._runs import SHARED_DATASETS, frozen_pass

SETS = [("flowers-dev", 224), ("cifar10-dev", 64), ("cifar10-dev", 224)]


def views(backbone, root: Path, classes: list[str], runtime: Runtime) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(plain features, mirrored features, labels) of every image under root."""
    samples, _ = find_eval_data(root, classes)
    loader = torch.utils.data.DataLoader(ImageDataset(samples, eval_transform(backbone.data_config, pixels=True)),
                                         batch_size=64)
    plain, mirrored, labels = [], [], []
    with frozen_pass(backbone, runtime=runtime, input_size=backbone.data_config.input_size) as forward:
        for pixels, y in loader:
            plain.append(forward(pixels).numpy())
            mirrored.append(forward(pixels.flip(-1).contiguous()).numpy())
            labels.append(y.numpy())
    return np.concatenate(plain), np.concatenate(mirrored), np.concatenate(labels)


def fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """graft's linear probe on features x (C by cross-validation, seed 0): the logits' weight and bias."""
    head = create_head(x.shape[1], int(y.max()) + 1)
    fit_logistic_head(head, FeatureSet(features=x, labels=y, meta={}, path=Path()), C=None, seed=0)
    linear = final_linear(head)
    return linear.weight.detach().numpy().astype(np.float64), linear.bias.detach().numpy().astype(np.float64)


def probabilities(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    logits = x @ weight.T + bias
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=SHARED_DATASETS)
    args = parser.parse_args()
    runtime = Runtime.resolve(precision="32", engine="onnxruntime", progress=False)
    about = provenance(parameters={"shared": str(args.shared), "sets": SETS})
    rows = []
    for name, size in SETS:
        root = args.shared / name
        classes = sorted(p.name for p in (root / "train").iterdir())
        backbone = create_backbone("tf_efficientnet_lite0", weights="imagenet", img_size=size)
        started = time.perf_counter()
        train_plain, train_flip, y_train = views(backbone, root / "train", classes, runtime)
        test_plain, test_flip, y_test = views(backbone, root / "test", classes, runtime)
        seconds = time.perf_counter() - started
        w, b = fit(train_plain, y_train)
        plain = (probabilities(test_plain, w, b).argmax(1) == y_test).mean()
        at_test = ((probabilities(test_plain, w, b) + probabilities(test_flip, w, b)).argmax(1) == y_test).mean()
        w2, b2 = fit((train_plain + train_flip) / 2, y_train)
        mean = (probabilities((test_plain + test_flip) / 2, w2, b2).argmax(1) == y_test).mean()
        row = {"data": name, "px": size, "train": len(y_train), "test": len(y_test), "plain": round(float(plain), 4),
               "tta_at_test": round(float(at_test), 4), "mean_features": round(float(mean), 4),
               "extraction_s": round(seconds, 1)}
        print(row, flush=True)
        rows.append(row)
    print("| data | px | train / test | plain | TTA at test | mean features (train and test) |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['data']} | {row['px']} | {row['train']} / {row['test']} | {row['plain']:.1%} | "
              f"{row['tta_at_test']:.1%} | {row['mean_features']:.1%} |")
    record("tta", {"rows": rows}, about)


if __name__ == "__main__":
    main()
