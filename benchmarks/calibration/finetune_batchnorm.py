"""Fine-tuning with the pretrained BatchNorm statistics kept, against batch statistics (docs/results.md).

    python -m benchmarks.calibration.finetune_batchnorm [--data ../shared/datasets/cifar10-dev]

A 1,000-image subset of CIFAR-10 (100 per class from train, val 50 per class from other training
images), 224 px, default backbone: the head on the frozen base, then 2 epochs on images, for each
BatchNorm setting. About 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import graft


def subset(source: Path, root: Path) -> Path:
    for split, count, offset in (("train", 100, 0), ("val", 50, 400)):
        for name in sorted(os.listdir(source / "train")):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for file in sorted(os.listdir(source / "train" / name))[offset:offset + count]:
                os.symlink((source / "train" / name / file).resolve(), root / split / name / file)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/cifar10-dev"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = subset(args.data, Path(tmp) / "data")
        settings = {"batch statistics": dict(train_bn_stats=True),
                    "batch statistics, base lr 0.01 x head": dict(train_bn_stats=True, backbone_lr_ratio=0.01),
                    "pretrained statistics kept (default)": dict(train_bn_stats=False)}
        print("| BatchNorm during fine-tuning | head alone | image epoch 1 | image epoch 2 |\n|---|---|---|---|")
        for label, options in settings.items():
            run = graft.train(data, strategy="finetune", epochs=2, head_epochs=15, views=1, progress=False,
                              log=None, out=Path(tmp) / "runs", cache_dir=Path(tmp) / "cache", report=False,
                              audit=False, **options)
            head = max(row.val_acc for row in run.history if row.phase == "head" and row.val_acc is not None)
            images = [row.val_acc for row in run.history if row.phase == "images" and row.val_acc is not None]
            print(f"| {label} | {head:.1%} | " + " | ".join(f"{value:.1%}" for value in images) + " |", flush=True)


if __name__ == "__main__":
    main()
