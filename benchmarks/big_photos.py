"""Predicting camera-sized photos: JPEG draft decoding (a reduced DCT scale) against decoding whole.

    python benchmarks/big_photos.py --data ../shared/datasets/flowers-dev [--side 3024] [--rounds 2]

A linear-probe Lite0 run on 20 images per class of DATA/train (benchmarks/_runs.py) and its ONNX
export. DATA/test's photos are enlarged to `--side` px on their short side (3024: a 12-megapixel
phone photo) and saved as JPEG (quality 90) in a temporary folder. In interleaved rounds, in this
process, `ExportedModel.predict` on every enlarged photo (1) as graft runs it, each JPEG decoded at
the smallest 1/2, 1/4 or 1/8 scale still covering 1.15 times the input side, and (2) decoding every
photo whole, as graft did before; then once (3) on the original photos. Prints images/s and top-1
accuracy of each; stores them under "big_photos" in benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _results import machine, store
from _runs import small_probe_export

EXTENSIONS = {".jpg", ".jpeg", ".png"}


def enlarge(test: Path, out: Path, side: int) -> list[Path]:
    from PIL import Image

    paths = []
    for source in sorted(p for p in test.rglob("*") if p.suffix.lower() in EXTENSIONS):
        image = Image.open(source).convert("RGB")
        scale = side / min(image.size)
        target = out / source.parent.name / f"{source.stem}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC).save(
            target, quality=90)
        paths.append(target)
    return paths


def measure(model, paths: list[Path]) -> tuple[float, float]:
    """(images/s, top-1 accuracy against the class folder names)."""
    started = time.perf_counter()
    answers = model.predict(paths)
    rate = len(paths) / (time.perf_counter() - started)
    return rate, sum(a.label == p.parent.name for a, p in zip(answers, paths)) / len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="A folder with train/ and test/ class folders.")
    parser.add_argument("--side", type=int, default=3024)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    from graft.export.exported import ExportedModel

    work, model_file = small_probe_export(options.data, "graft-big-photos-")
    big = enlarge(options.data / "test", work / "big", options.side)
    original = sorted(p for p in (options.data / "test").rglob("*") if p.suffix.lower() in EXTENSIONS)
    drafted, whole = ExportedModel(model_file), ExportedModel(model_file)
    whole.draft_size = None  # decode every photo whole: graft's way before the draft
    rates: dict[str, list[float]] = {"draft": [], "whole": []}
    accuracy: dict[str, float] = {}
    for round_ in range(1, options.rounds + 1):
        for name, model in (("draft", drafted), ("whole", whole)):
            rate, accuracy[name] = measure(model, big)
            rates[name].append(rate)
            print(f"round {round_}: {len(big)} photos of {options.side} px, {name}: {rate:.1f} img/s, "
                  f"top-1 {accuracy[name]:.1%}", flush=True)
    original_rate, accuracy["original"] = measure(drafted, original)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(f"median: draft {medians['draft']:.1f} img/s, whole {medians['whole']:.1f} img/s "
          f"({medians['draft'] / medians['whole']:.2f}x); original photos {original_rate:.1f} img/s, "
          f"top-1 {accuracy['original']:.1%}")
    store({"big_photos": {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"), "data": str(options.data), "photos": len(big), "side": options.side,
        "img_per_s": {name: [round(v, 1) for v in values] for name, values in rates.items()},
        "speedup": round(medians["draft"] / medians["whole"], 2), "original_img_per_s": round(original_rate, 1),
        "top1": {name: round(value, 4) for name, value in accuracy.items()}}})


if __name__ == "__main__":
    main()
