"""Speed benchmarks for issue 3, each a ratio measured within one run (the machine is shared and noisy).

    python benchmarks/speed.py --data ../shared/datasets/cifar10-dev     # writes benchmarks/results.json

1. frozen training, 10 epochs: graft (features cached once) vs a Keras-style loop (fp32, NCHW, the
   frozen base run over every augmented image in every epoch, validation through the full model);
2. extraction: JPEG files to features on disk, over the bare backbone on pre-decoded tensors, for
   the small CIFAR images and for large 1000x750 JPEGs;
3. fine-tuning: graft's Lightning image phase over a bare training step on pre-decoded tensors;
4. peak RSS while extracting features of 50,000 images (the set repeated), in a fresh process;
5. cache reuse: a second identical linear-probe run over the first;
6. torch.compile: the frozen backbone compiled against eager, and the images that repay the compile.
Sizes are flags; the defaults take about 25 minutes on 2 CPU cores (the Keras-style loop, 11 of them).
The results go into benchmarks/results.json under their own keys; the file's other keys (benchmarks
not run this time, benchmarks/startup.py's "startup") are kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _results import machine as recorded_machine
from _results import store
from PIL import Image
from torch.nn import functional as F

import graft
from graft.backbones import create_backbone
from graft.data.discover import Sample, find_data
from graft.data.transforms import Augment, eval_transform, train_transform
from graft.features import FeatureCache, backbone_features
from graft.features.extract import ViewDataset
from graft.heads import create_head
from graft.model import GraftModel
from graft.runtime import Runtime
from graft.training.datasets import image_loader
from graft.training.fit import fit

BACKBONE = "tf_efficientnet_lite0"


def subset(source: Path, target: Path, train_per_class: int, val_per_class: int) -> Path:
    """A train/val folder of symlinks: the first images of each class of source/train and source/test."""
    for split, origin, count in (("train", "train", train_per_class), ("val", "test", val_per_class)):
        for class_dir in sorted((source / origin).iterdir()):
            (target / split / class_dir.name).mkdir(parents=True, exist_ok=True)
            for image in sorted(class_dir.iterdir())[:count]:
                (target / split / class_dir.name / image.name).symlink_to(image.resolve())
    return target


def large_jpegs(source: Path, target: Path, count: int) -> list[Sample]:
    """count 1000x750 JPEGs (CIFAR images upscaled), the size of phone photos after a resize."""
    target.mkdir(parents=True, exist_ok=True)
    images = sorted((source / "train").rglob("*.jpg"))[:count]
    for index, path in enumerate(images):
        Image.open(path).convert("RGB").resize((1000, 750), Image.BICUBIC).save(target / f"{index:05d}.jpg", quality=90)
    return [Sample(p, 0) for p in sorted(target.iterdir())]


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def bare_backbone_rate(backbone, size: int, runtime: Runtime, batch: int = 64, repeats: int = 4) -> float:
    """Images/s of the backbone alone on pre-decoded tensors, as graft runs it (channels_last, and
    bf16 autocast where the CPU has it: the same precision the end-to-end extraction used)."""
    backbone.eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), runtime.autocast(torch.device("cpu")):
        backbone(x)
        _, seconds = timed(lambda: [backbone(x) for _ in range(repeats)])
    return batch * repeats / seconds


def bench_frozen_training(data: Path, epochs: int, views: int, runtime: Runtime) -> dict:
    splits = find_data(data)
    # graft: features once per image and view, then the head trains on them.
    # (The data audit and the report are extras the baseline does not do: left out of this timing.)
    # views 0: the head trains on plain (unaugmented) features, the course's fast feature extraction;
    # views N: on N cached augmented views, cycled through the epochs.
    augment = dict(augment=False) if views == 0 else dict(views=views)
    run, graft_s = timed(lambda: graft.train(
        data, strategy="feature-extract", head_epochs=epochs, patience=epochs, out=data.parent / "runs",
        cache_dir=data.parent / "cache", workers=runtime.workers, progress=False, log=None, report=False,
        audit=False, **augment))
    # Keras-style: the frozen base runs in every epoch, fp32, NCHW, over augmented images.
    backbone = create_backbone(BACKBONE).eval()
    head = create_head(backbone.num_features, len(splits.classes))
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-4)
    train_loader = image_loader(ViewDatasetWithLabels(splits.train, train_transform(backbone.data_config, Augment())),
                                batch_size=32, shuffle=True, workers=runtime.workers)
    val_loader = image_loader(ViewDatasetWithLabels(splits.val, eval_transform(backbone.data_config)),
                              batch_size=64, shuffle=False, workers=runtime.workers)

    def keras_style():
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
            accuracy = correct / len(splits.val)
        return accuracy

    baseline_accuracy, baseline_s = timed(keras_style)
    return {"images": len(splits.train), "val_images": len(splits.val), "epochs": epochs, "views": views,
            "graft_s": graft_s, "graft_timings": run.metrics.timings, "graft_val_acc": run.metrics.val_accuracy,
            "baseline_s": baseline_s, "baseline_val_acc": baseline_accuracy, "speedup": baseline_s / graft_s}


class ViewDatasetWithLabels(torch.utils.data.Dataset):
    def __init__(self, samples, transform):
        self.views = ViewDataset([s.path for s in samples], transform)
        self.labels = [s.label for s in samples]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.views[index], self.labels[index]


def bench_extraction(samples: list[Sample], cache_root: Path, runtime: Runtime, rounds: int = 3) -> dict:
    """Rounds of (bare, end to end) back to back: this machine's speed drifts by tens of percent over
    minutes, so each round's ratio compares neighbours, and the median round is reported."""
    backbone = create_backbone(BACKBONE)
    size = backbone.data_config.image_size
    rows = []
    for round_ in range(rounds):
        bare = bare_backbone_rate(backbone, size, runtime, batch=32, repeats=8)
        cache = FeatureCache(cache_root / str(round_))  # a cold cache each round
        _, seconds = timed(lambda cache=cache: backbone_features(backbone, samples, split="bench", runtime=runtime,
                                                                 cache=cache))
        rows.append({"end_to_end_img_s": len(samples) / seconds, "bare_img_s": bare, "ratio": len(samples) / seconds / bare})
    median = sorted(rows, key=lambda row: row["ratio"])[len(rows) // 2]
    return {"images": len(samples), **median, "rounds": rows}


def bench_finetune(data: Path, batches: int, runtime: Runtime, rounds: int = 2) -> dict:
    splits = find_data(data)
    backbone = create_backbone(BACKBONE)
    model = GraftModel(backbone, create_head(backbone.num_features, len(splits.classes)))
    samples = splits.train[: batches * 32]
    groups = [{"params": list(model.head.parameters()), "lr": 1e-3}, {"params": list(backbone.parameters()), "lr": 1e-4}]
    loader = image_loader(ViewDatasetWithLabels(samples, train_transform(backbone.data_config, Augment())),
                          batch_size=32, shuffle=True, workers=runtime.workers)
    val = image_loader(ViewDatasetWithLabels(splits.val[:32], eval_transform(backbone.data_config)), batch_size=32,
                       shuffle=False, workers=runtime.workers)
    # Bare: the same model, forward/backward/step on pre-decoded channels_last tensors.
    optimizer = torch.optim.AdamW(groups)
    x = torch.randn(32, 3, backbone.data_config.image_size, backbone.data_config.image_size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, len(splits.classes), (32,))

    def step():
        with runtime.autocast(torch.device("cpu")):  # graft's Lightning phase runs bf16-mixed where this is bf16
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    rows = []
    for round_ in range(rounds):  # back to back, as in bench_extraction
        model.train().to(memory_format=torch.channels_last)
        step()
        _, bare_s = timed(lambda: [step() for _ in range(batches)])
        # End to end: one epoch of graft's Lightning image phase (with a one-batch validation pass).
        run_dir = data.parent / f"ft{round_}"
        _, seconds = timed(lambda run_dir=run_dir: fit(model, loader, val, param_groups=groups, phase="bench",
                                                       runtime=runtime, run_dir=run_dir, epochs=1))
        rows.append({"end_to_end_img_s": len(samples) / seconds, "bare_img_s": batches * 32 / bare_s,
                     "ratio": len(samples) / seconds / (batches * 32 / bare_s)})
    median = sorted(rows, key=lambda row: row["ratio"])[len(rows) // 2]
    return {"images": len(samples), **median, "rounds": rows,
            "includes": "Lightning trainer start-up, data loading, augmentation, one 32-image validation pass"}


def bench_compile(size: int, runtime: Runtime, batch: int = 64, repeats: int = 6) -> dict:
    """torch.compile on the frozen backbone, as extraction runs it (inference, channels_last, autocast):
    throughput against eager, the one-off compile time, and how many images repay that time."""
    backbone = create_backbone(BACKBONE).eval().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    device = torch.device("cpu")

    def rate(model) -> float:
        with torch.inference_mode(), runtime.autocast(device):
            model(x)
            _, seconds = timed(lambda: [model(x) for _ in range(repeats)])
        return batch * repeats / seconds

    eager = rate(backbone)
    compiled = torch.compile(backbone)
    with torch.inference_mode(), runtime.autocast(device):
        _, compile_s = timed(lambda: compiled(x))  # the first call compiles
    fast = rate(compiled)
    gain_per_image = 1 / eager - 1 / fast
    return {"eager_img_s": eager, "compiled_img_s": fast, "speedup": fast / eager, "compile_s": compile_s,
            "images_to_break_even": compile_s / gain_per_image if gain_per_image > 0 else None}


def bench_memory(data: Path, total: int, img_size: int, cache_root: Path, runtime: Runtime) -> dict:
    """Peak RSS of a fresh process extracting `total` images (the set repeated)."""
    code = f"""
import resource, sys
from graft.backbones import create_backbone
from graft.data.discover import find_data
from graft.features import FeatureCache, backbone_features
from graft.runtime import Runtime
splits = find_data({str(data)!r}, check_images=False)
samples = (splits.train * ({total} // len(splits.train) + 1))[:{total}]
backbone = create_backbone({BACKBONE!r}, img_size={img_size})
runtime = Runtime.resolve(precision={runtime.precision!r}, workers={runtime.workers}, batch_size={runtime.batch_size}, progress=False)
features = backbone_features(backbone, samples, split="memory", cache=FeatureCache({str(cache_root)!r}), runtime=runtime)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec.
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(features.features.shape[0], peak_kb, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    count, own_kb, workers_kb = int(out[-3]), int(out[-2]), int(out[-1])
    return {"images": count, "img_size": img_size, "peak_rss_mb": own_kb / 1024,
            "loader_worker_peak_rss_mb_upper_bound": workers_kb / 1024, "seconds": time.perf_counter() - start}


def bench_cache_reuse(data: Path, runtime: Runtime) -> dict:
    """Two identical linear-probe runs, as a user types them (data audit and report included), then
    two more without those extras (a fresh cache each time)."""

    def run(name: str, cache: Path, extras: dict):
        return graft.train(data, strategy="linear-probe", out=data.parent / "reuse", name=name, cache_dir=cache,
                           workers=runtime.workers, progress=False, log=None, **extras)

    results = {}
    for label, extras in (("default", {}), ("no_report_no_audit", dict(report=False, audit=False))):
        cache = data.parent / f"reuse-cache-{label}"
        first, first_s = timed(lambda label=label, cache=cache, extras=extras: run(f"{label}-first", cache, extras))
        second, second_s = timed(lambda label=label, cache=cache, extras=extras: run(f"{label}-second", cache, extras))
        results[label] = {"first_s": first_s, "second_s": second_s, "speedup": first_s / second_s,
                          "same_accuracy": first.metrics.val_accuracy == second.metrics.val_accuracy,
                          "second_timings": second.metrics.timings}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/cifar10-dev"))
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--val-per-class", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--views", type=int, default=0, help="0: graft trains on plain features")
    parser.add_argument("--extract-images", type=int, default=1000)
    parser.add_argument("--large-images", type=int, default=320)
    parser.add_argument("--finetune-batches", type=int, default=20)
    parser.add_argument("--memory-images", type=int, default=50_000)
    parser.add_argument("--memory-img-size", type=int, default=224)
    parser.add_argument("--only", default="1,2,3,4,5,6", help="which benchmarks, e.g. 1,5")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results.json"))
    args = parser.parse_args()
    runtime = Runtime.resolve(progress=False)  # graft's defaults on this machine: precision auto, default workers
    chosen = set(args.only.split(","))
    # Other keys of the file (benchmarks not chosen this time, benchmarks/startup.py's "startup") are kept.
    results = {"machine": machine(), "precision": runtime.precision, "workers": runtime.workers,
               "args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = subset(args.data, tmp / "data", args.train_per_class, args.val_per_class)
        if "1" in chosen:
            results["1_frozen_training"] = report("1", bench_frozen_training(data, args.epochs, args.views, runtime))
        if "2" in chosen:
            small = find_data(args.data, check_images=False).train[: args.extract_images]
            results["2_extraction_small"] = report("2 small", bench_extraction(small, tmp / "c-small", runtime))
            large = large_jpegs(args.data, tmp / "large", args.large_images)
            results["2_extraction_large"] = report("2 large", bench_extraction(large, tmp / "c-large", runtime))
        if "3" in chosen:
            results["3_finetune"] = report("3", bench_finetune(data, args.finetune_batches, runtime))
        if "4" in chosen:
            results["4_memory"] = report("4", bench_memory(args.data, args.memory_images, args.memory_img_size, tmp / "c-mem", runtime))
        if "5" in chosen:
            results["5_cache_reuse"] = report("5", bench_cache_reuse(data, runtime))
        if "6" in chosen:
            results["6_compile"] = report("6", bench_compile(224, runtime))
    store(results, args.json)
    print(f"written {args.json}")


def report(name: str, values: dict) -> dict:
    print(name, json.dumps(values), flush=True)
    return values


def machine() -> dict:
    """_results.machine() (CPU, cores, native bf16, AMX, versions) and the threads torch uses."""
    return {**recorded_machine(), "threads": torch.get_num_threads()}

if __name__ == "__main__":
    main()
