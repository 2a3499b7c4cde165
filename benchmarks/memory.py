"""Peak memory of a fresh process extracting the features of many images, against a few.

A child process runs graft.features.backbone_features (graft's defaults on this machine) over
IMAGES files (DATA/train's images repeated) at IMG_SIZE px into a cold feature cache; its peak is
the largest RSS of it and any process it starts, together (benchmarks/_runs.py `watch`). The same
for SMALL_IMAGES, so that the growth with the number of images shows. An untimed extraction of two
images first traces the backbone's graph where the engine needs one, as graft keeps it for every
later run. Target: at most 1.5 GB.
"""

from __future__ import annotations

import json
import sys

from ._runs import BACKBONE, Context, Parameter, image_files, watch

PARAMETERS = {
    "images": Parameter(50_000, 200, "images extracted (DATA/train's repeated)"),
    "small_images": Parameter(640, 16, "the same with this many, for comparison"),
    "img_size": Parameter(224, 32, "input size in px"),
    "engine": Parameter("auto", "auto", "--engine of the extraction (auto: graft's choice here)"),
}
TARGET_MB = 1536

CHILD = """
import json, sys
from pathlib import Path
from graft.backbones import create_backbone
from graft.data.discover import Sample
from graft.features import FeatureCache, backbone_features
from graft.runtime import Runtime
paths = Path(sys.argv[1]).read_text().splitlines()
backbone = create_backbone(sys.argv[3], img_size=int(sys.argv[4]))
features = backbone_features(backbone, [Sample(Path(p), 0) for p in paths], split="memory",
                             runtime=Runtime.resolve(progress=False, engine=sys.argv[5]), cache=FeatureCache(sys.argv[2]))
print(json.dumps({"images": len(features), "engine": features.meta.get("engine", "torch"),
                  "precision": features.meta.get("precision")}))
"""


def extract(context: Context, count: int, img_size: int, engine: str) -> dict:
    files = image_files(context.data / "train")
    listing = context.work / f"files-{count}.txt"
    listing.write_text("\n".join(str(files[i % len(files)]) for i in range(count)))
    watched = watch([sys.executable, "-c", CHILD, str(listing), str(context.work / f"cache-{count}"), BACKBONE,
                     str(img_size), engine], env=context.env)
    done = json.loads(watched.stdout.strip().splitlines()[-1])
    return {**done, "peak_rss_mb": round(watched.peak_rss_mb), "seconds": round(watched.seconds, 1),
            "img_per_s": round(done["images"] / watched.seconds, 1)}


def run(context: Context, *, images: int, small_images: int, img_size: int, engine: str) -> dict:
    extract(context, 2, img_size, engine)  # untimed: traces the backbone's graph where the engine needs one
    small = extract(context, small_images, img_size, engine)
    context.log(f"{small_images} images: {small}")
    large = extract(context, images, img_size, engine)
    context.log(f"{images} images: {large}")
    return {"summary": f"peak RSS {large['peak_rss_mb']:,} MB for {images:,} images at {img_size} px "
                       f"({small['peak_rss_mb']:,} MB for {small_images:,}; target <= {TARGET_MB:,} MB)",
            "img_size": img_size, "many": large, "few": small, "target_mb": TARGET_MB,
            "met": large["peak_rss_mb"] <= TARGET_MB}
