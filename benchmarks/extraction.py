"""Feature extraction end to end over the bare backbone, for small images and for large JPEGs.

- End to end: graft.features.backbone_features from JPEG files to features on disk, into a cold
  cache each round: decoding, resizing, the batch transfer, the forward pass and the cache write.
- Bare: the same backbone in the same engine and precision (graft.engines), on a batch of 32 uint8
  images already in memory, for as long as BARE_SECONDS.
An untimed extraction first traces the backbone's graph where the engine needs one, and says which
engine and precision graft chose; both sides of each ratio then use those. Small: the first IMAGES
files of DATA/train. Large: LARGE_IMAGES of them enlarged to 1000 x 750 px JPEGs (quality 90), the
size of a phone photo after a resize (0: skip). Ratio: the median round of end to end / bare.
"""

from __future__ import annotations

from pathlib import Path

from ._runs import BACKBONE, Context, Parameter, frozen_pass, image_files, interleaved, timed, torch_bare_rate

PARAMETERS = {
    "images": Parameter(1000, 48, "small images (the first files of DATA/train)"),
    "large_images": Parameter(320, 8, "1000 x 750 JPEGs made from DATA/train (0: skip)"),
    "img_size": Parameter(0, 64, "input size in px; 0: the backbone's own (224)"),
    "rounds": Parameter(3, 1, "interleaved rounds"),
    "bare_seconds": Parameter(8.0, 1.0, "seconds of each bare measurement"),
}


def large_jpegs(sources: list[Path], folder: Path) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, path in enumerate(sources):
        paths.append(folder / f"{index:05d}.jpg")
        Image.open(path).convert("RGB").resize((1000, 750), Image.Resampling.BICUBIC).save(paths[-1], quality=90)
    return paths


def measure(context: Context, name: str, paths: list[Path], *, img_size: int, rounds: int, bare_seconds: float) -> dict:
    import torch

    from graft.backbones import create_backbone
    from graft.data.discover import Sample
    from graft.features import FeatureCache, backbone_features
    from graft.runtime import Runtime

    backbone = create_backbone(BACKBONE, img_size=img_size or None)
    samples = [Sample(path, 0) for path in paths]
    runtime = Runtime.resolve(progress=False)  # graft's defaults on this machine
    chosen = backbone_features(backbone, samples, split=name, runtime=runtime,
                               cache=FeatureCache(context.work / f"{name}-warm")).meta
    engine, precision = chosen.get("engine", "torch"), chosen.get("precision", runtime.precision)
    bare_runtime = runtime.but(engine=engine, precision=precision)
    size = backbone.data_config.input_size
    pixels = torch.randint(0, 256, (32, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    rounds_done = iter(range(rounds))

    def end_to_end() -> float:
        cache = FeatureCache(context.work / f"{name}-{next(rounds_done)}")  # cold
        _, seconds = timed(lambda: backbone_features(backbone, samples, split=name, runtime=runtime, cache=cache))
        return len(samples) / seconds

    with frozen_pass(backbone, runtime=bare_runtime, input_size=size) as forward:
        pair = interleaved(rounds, {name: (lambda: torch_bare_rate(forward, pixels, seconds=bare_seconds), end_to_end)},
                           log=context.log)[name]
    return {"images": len(samples), "engine": engine, "precision": precision, "input_size": list(size),
            "img_per_s": pair.summary(1), "ratio": round(pair.ratio, 3)}


def run(context: Context, *, images: int, large_images: int, img_size: int, rounds: int, bare_seconds: float) -> dict:
    files = image_files(context.data / "train")
    small = measure(context, "small", files[:images], img_size=img_size, rounds=rounds, bare_seconds=bare_seconds)
    figures = {"small": small}
    summary = f"small images {small['ratio']:.2f} x bare ({small['engine']}, {small['precision']})"
    if large_images:
        large = measure(context, "large", large_jpegs(files[:large_images], context.work / "large"), img_size=img_size,
                        rounds=rounds, bare_seconds=bare_seconds)
        figures["large"] = large
        summary += f"; 1000 x 750 JPEGs {large['ratio']:.2f} x bare"
    return {"summary": summary, **figures}
