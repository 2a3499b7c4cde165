"""The step timings behind docs/benchmarks.md: where extraction and a cached run spend their time.

    python benchmarks/profile_steps.py --data ../shared/datasets/cifar10-dev

1. per image, one thread: JPEG decode (draft mode), resizing with Pillow against torchvision's
   uint8 kernels, and the float conversion + normalisation a loader used to do per image;
2. extraction of 640 CIFAR images: batches of 32 against 64 (throughput and peak RSS, each in a
   fresh process), and 0 against 1 loader worker;
3. find_data on 2,500 images: first call (decodes every image) against the second (remembered);
4. the mistakes figure of a report, PNG at zlib level 6 against 1.
About 3 minutes on 2 CPU cores. Single measurements on a noisy machine: read them as sizes, not
as exact figures.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2


def per_image(function, items, repeats: int = 3) -> float:
    """Best of `repeats` passes, in ms per item."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            function(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e3


def steps(data: Path, tmp: Path) -> None:
    from graft.backbones import create_backbone
    from graft.data.images import load_image
    from graft.data.transforms import eval_transform

    torch.set_num_threads(1)
    config = create_backbone("tf_efficientnet_lite0").data_config
    small_paths = sorted((data / "train").rglob("*.jpg"))[:200]
    large_paths = []
    for index, path in enumerate(small_paths[:60]):
        large_paths.append(tmp / f"large{index}.jpg")
        Image.open(path).convert("RGB").resize((1000, 750), Image.BICUBIC).save(large_paths[-1], quality=90)
    for label, paths, draft, size in (("small (32 px)", small_paths, None, (224, 224)),
                                      ("large (1000x750)", large_paths, (257, 257), 256)):
        images = [load_image(p, draft_size=draft) for p in paths]
        tensors = [v2.functional.pil_to_tensor(image) for image in images]
        pil_resize = v2.Resize(size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
        print(f"{label}: decode {per_image(lambda p, draft=draft: load_image(p, draft_size=draft), paths):.2f} ms; "
              f"resize with Pillow {per_image(pil_resize, images):.2f} ms, "
              f"with torchvision uint8 {per_image(pil_resize, tensors):.2f} ms; "
              f"whole pixel transform {per_image(eval_transform(config, pixels=True), images):.2f} ms")
    pixels = [eval_transform(config, pixels=True)(load_image(p)) for p in small_paths]
    to_float = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(config.mean), list(config.std))])
    print(f"float conversion + normalisation per image in a loader: {per_image(to_float, pixels):.2f} ms")


EXTRACT = """
import sys, tempfile, time
from graft.backbones import create_backbone
from graft.data.discover import find_data
from graft.features import FeatureCache, backbone_features
from graft.runtime import Runtime
samples = find_data(sys.argv[1], check_images=False).train[:640]
backbone = create_backbone("tf_efficientnet_lite0")
with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    runtime = Runtime.resolve(batch_size=int(sys.argv[2]), workers=int(sys.argv[3]), progress=False)
    backbone_features(backbone, samples, split="x", cache=FeatureCache(tmp), runtime=runtime)
    seconds = time.perf_counter() - start
peak = int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]) // 1024
print(f"{640 / seconds:.0f} img/s, peak RSS {peak} MB")
"""


def extraction(data: Path) -> None:
    for batch, workers in ((64, 0), (32, 0), (32, 1), (64, 0), (32, 0), (32, 1)):
        out = subprocess.run([sys.executable, "-c", EXTRACT, str(data), str(batch), str(workers)],
                             capture_output=True, text=True, check=True).stdout.strip()
        print(f"extraction, batch {batch}, {workers} loader workers: {out}")


def find_data_twice(data: Path, tmp: Path) -> None:
    import os

    os.environ["GRAFT_CACHE"] = str(tmp / "cache")  # a fresh memo
    from graft.data.discover import find_data

    root = tmp / "subset"
    for split, origin, count in (("train", "train", 200), ("val", "test", 50)):
        for class_dir in sorted((data / origin).iterdir()):
            (root / split / class_dir.name).mkdir(parents=True)
            for image in sorted(class_dir.iterdir())[:count]:
                (root / split / class_dir.name / image.name).symlink_to(image.resolve())
    for attempt in ("first", "second"):
        start = time.perf_counter()
        find_data(root)
        print(f"find_data on 2,500 images, {attempt} call: {time.perf_counter() - start:.2f} s")


def report_png(data: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from graft.explain.figures import MapPair
    from graft.report.plots import mistakes_figure

    rng = np.random.default_rng(0)
    images = [Image.open(p).convert("RGB").resize((224, 224)) for p in sorted((data / "test" / "cat").iterdir())[:8]]
    pairs = [MapPair(image, rng.random((7, 7)), "true cat, said dog 97%", "dog", "cat/0001.jpg") for image in images]
    for level in (6, 1, 6, 1):
        figure = mistakes_figure(pairs)
        FigureCanvasAgg(figure)
        buffer = io.BytesIO()
        start = time.perf_counter()
        figure.savefig(buffer, format="png", dpi=110, pil_kwargs={"compress_level": level})
        print(f"mistakes figure, PNG zlib level {level}: {time.perf_counter() - start:.2f} s, "
              f"{len(buffer.getvalue()) / 2**20:.2f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/cifar10-dev"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        steps(args.data, Path(tmp))
        extraction(args.data)
        find_data_twice(args.data, Path(tmp))
        report_png(args.data)


if __name__ == "__main__":
    main()
