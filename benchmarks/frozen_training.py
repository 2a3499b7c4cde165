"""Frozen training: a Keras-style loop's time over graft's, and both val accuracies.

- graft: `graft.train(strategy="feature-extract", augment=False)`: the backbone runs once per image
  into a cold feature cache, then the head epochs run on the cached features (no report or audit:
  extras the baseline does not do).
- Keras-style: plain torch and torchvision, fp32, NCHW; the frozen base runs over every augmented
  image (random resized crop and flip) in every epoch, and validation runs through the full model
  after each epoch. The same backbone and weights (graft.backbones.create_backbone), a Linear head.
Data: the first TRAIN_PER_CLASS images of each class of DATA/train, and VAL_PER_CLASS of DATA/test
as validation. Speed-up: the median round of Keras-style seconds / graft seconds.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ._runs import BACKBONE, Context, Parameter, class_subset, image_files, interleaved, timed

PARAMETERS = {
    "train_per_class": Parameter(200, 4, "training images per class (DATA/train)"),
    "val_per_class": Parameter(50, 2, "validation images per class (DATA/test)"),
    "epochs": Parameter(10, 2, "epochs of each"),
    "img_size": Parameter(0, 64, "input size in px; 0: the backbone's own (224)"),
    "rounds": Parameter(1, 1, "interleaved rounds (the Keras-style loop takes about 11 minutes a round at full size)"),
}


def keras_style(data: Path, *, epochs: int, img_size: int) -> tuple[float, dict]:
    import torch
    from torch.nn import functional as F
    from torchvision import datasets
    from torchvision.transforms import v2

    from graft.backbones import create_backbone
    from graft.runtime import default_workers

    backbone = create_backbone(BACKBONE, img_size=img_size or None).eval()
    config = backbone.data_config
    size = config.image_size
    to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(config.mean), list(config.std))]
    train = datasets.ImageFolder(str(data / "train"), transform=v2.Compose(
        [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), *to_float]))
    val = datasets.ImageFolder(str(data / "val"), transform=v2.Compose(
        [v2.Resize(int(size / config.crop_pct), antialias=True), v2.CenterCrop(size), *to_float]))
    train_loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True, num_workers=default_workers())
    val_loader = torch.utils.data.DataLoader(val, batch_size=64, num_workers=default_workers())
    head = torch.nn.Linear(backbone.num_features, len(train.classes))
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-4)

    def fit() -> float:
        accuracy = 0.0
        for _ in range(epochs):
            head.train()
            for x, y in train_loader:
                with torch.no_grad():
                    features = backbone(x)
                loss = F.cross_entropy(head(features), y, label_smoothing=0.1)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            head.eval()
            correct = 0
            with torch.no_grad():
                for x, y in val_loader:
                    correct += int((head(backbone(x)).argmax(1) == y).sum())
            accuracy = correct / len(val)
        return accuracy

    accuracy, seconds = timed(fit)
    return seconds, {"val_accuracy": accuracy}


def run(context: Context, *, train_per_class: int, val_per_class: int, epochs: int, img_size: int, rounds: int) -> dict:
    import graft

    data = class_subset(context.data, context.work / "data", train_per_class=train_per_class,
                        val_per_class=val_per_class)
    runs = iter(range(rounds))

    def graft_run() -> tuple[float, dict]:
        index = next(runs)  # a cold cache every round
        result, seconds = timed(lambda: graft.train(
            data, strategy="feature-extract", augment=False, head_epochs=epochs, patience=epochs,
            out=context.work / "runs", name=f"round-{index}", cache_dir=context.work / f"cache-{index}",
            img_size=img_size or None, progress=False, log=None, report=False, audit=False))
        return seconds, {"val_accuracy": result.metrics.val_accuracy, "timings": result.metrics.timings}

    pair = interleaved(rounds, {"training": (lambda: keras_style(data, epochs=epochs, img_size=img_size), graft_run)},
                       log=context.log)["training"]
    speedups = [1 / ratio for ratio in pair.ratios]
    speedup = statistics.median(speedups)
    graft_acc = statistics.median(extra["val_accuracy"] for extra in pair.extras)
    keras_acc = statistics.median(extra["val_accuracy"] for extra in pair.baseline_extras)
    return {
        "summary": f"Keras-style / graft {speedup:.1f}x ({pair.baseline[0]:.1f} s / {pair.measured[0]:.1f} s in round 1), "
                   f"val accuracy {keras_acc:.1%} / {graft_acc:.1%}",
        "speedup": round(speedup, 2), "speedups": [round(s, 2) for s in speedups],
        "keras_style_s": [round(v, 1) for v in pair.baseline], "graft_s": [round(v, 1) for v in pair.measured],
        "graft_val_accuracy": graft_acc, "keras_style_val_accuracy": keras_acc,
        "graft_timings": pair.extras[-1]["timings"],
        "train_images": len(image_files(data / "train")), "val_images": len(image_files(data / "val")),
    }
