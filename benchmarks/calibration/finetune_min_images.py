"""auto's line of FINETUNE_MIN_IMAGES training images in all (issue 24, 5.1), checked on sets it was
not tuned on: under it the default is the probe, so fine-tuning must not have paid there; over it
the default fine-tunes, and must stay within a point of the better of the two.

    python -m benchmarks.calibration.finetune_min_images [--shared ../shared/datasets] [--only flowers3,...]
        [--seeds 0,1] [--key finetune_min_images]

The line (graft.advise.auto.FINETUNE_MIN_IMAGES) was tuned on flowers-dev at 60 and 80 photos per
class, grey flowers at 80 and issue 24's own sets (docs/advise.md). Sets checked here, none of them
used in tuning:
- flowers3: flowers-dev's daisy, dandelion and tulips, 80 training photos per class after the val
  split (240 in all: under the line; the per-class count at which 5 classes gained), 224 px;
- dht: CIFAR-10's deer, horse and truck (classes no tuning set used), 88 per class after the split
  (264: under), 64 px;
- dht-large: the same classes, 160 per class (480: over), 64 px;
- flowers60: the tuning set (300 in all), for the time of the default against the probe's only.
Each row is one `graft train` process as typed but for --no-report, with a cold feature cache of its
own (benchmarks.calibration.auto_calibrate.run), for `--strategy auto` (the default), `linear-probe`
and `probe-finetune --budget 0` (what auto ran before the line), seeds as given (`--seed`: another
val split and training order). Stored under KEY in benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from .._results import provenance, record
from .._runs import SHARED_DATASETS, train_subset
from .auto_calibrate import build_cifar_classes, run

SETS = {  # key: (input size, strategies)
    "flowers3": ("224", ("auto", "linear-probe", "probe-finetune")),
    "dht": ("64", ("auto", "linear-probe", "probe-finetune")),
    "dht-large": ("64", ("auto", "linear-probe", "probe-finetune")),
    "flowers60": ("224", ("auto", "linear-probe")),
}
FLOWERS3 = ("daisy", "dandelion", "tulips")
DHT = ("deer", "horse", "truck")


def build(key: str, shared: Path, work: Path) -> Path:
    root = work / key
    if key == "flowers3":
        for split in ("train", "test"):
            for name in FLOWERS3:
                folder = root / split / name
                folder.mkdir(parents=True, exist_ok=True)
                for image in sorted((shared / "flowers-dev" / split / name).iterdir()):
                    (folder / image.name).symlink_to(image.resolve())
        return root
    if key == "flowers60":  # 75 per class in the folder, 60 after graft's val split (finetune_curves' flowers60)
        return train_subset(shared / "flowers-dev", root, train_per_class=75)
    return build_cifar_classes(shared, root, DHT, train=110 if key == "dht" else 200, test=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=SHARED_DATASETS)
    parser.add_argument("--only", default=",".join(SETS))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--key", default="finetune_min_images")
    args = parser.parse_args()
    about = provenance(parameters={"only": args.only, "seeds": args.seeds})
    rows = []
    with tempfile.TemporaryDirectory(prefix="graft-min-images-") as folder:
        work = Path(folder)
        for key in args.only.split(","):
            size, strategies = SETS[key]
            data = build(key, args.shared, work)
            for seed in args.seeds.split(","):
                for strategy in strategies:
                    extra = ["--img-size", size, "--seed", seed] + (["--budget", "0"] if strategy == "probe-finetune" else [])
                    row = run(f"{key}-seed{seed}", data, strategy, extra, work) | {"set": key, "seed": int(seed)}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    record(args.key, {"rows": rows}, about)


if __name__ == "__main__":
    main()
