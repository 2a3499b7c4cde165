"""Inference engines for frozen forward passes: speed and agreement against eager PyTorch fp32.

1. The forward pass alone: EfficientNet-Lite0 (ImageNet weights) at SIZE px on uint8 batches of 32
   in memory, for each engine this machine has: torch fp32, torch bf16 autocast (only where the CPU
   computes bf16 natively), ONNX Runtime, OpenVINO (f32); BATCHES batches per engine per round,
   ROUNDS rounds taking turns. Images/s (median round), the ratio to torch fp32, and the largest
   feature difference from torch fp32. Tracing the graph is timed apart (paid once per network).
2. Feature extraction as graft runs it (decode, resize, crop, forward, into the cache): the first
   IMAGES files of DATA/train with `--engine torch` (in TORCH_PRECISION: "auto" is graft's default
   here, "32" or "bf16" the one named) and `--engine onnxruntime` (graph traced beforehand), each
   into a fresh cache, interleaved. Ratio: the median round of ONNX Runtime's rate over torch's.
   What each side computed in (engine and precision, from the features' cache entry) is recorded.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from ._runs import BACKBONE, Context, Parameter, frozen_pass, image_files, interleaved, timed

PARAMETERS = {
    "size": Parameter(224, 64, "input size in px"),
    "rounds": Parameter(3, 1, "rounds"),
    "batches": Parameter(4, 1, "batches of 32 per engine per round (forward pass)"),
    "images": Parameter(400, 32, "images extracted per engine per round (the first files of DATA/train)"),
    "torch_precision": Parameter("auto", "auto", "the torch side of the extraction: auto (graft's default here), 32 or bf16"),
}


def in_precision(runtime, precision: str):
    """`runtime` computing frozen passes in `precision` ("32" or "bf16"), whichever field of Runtime says so."""
    from dataclasses import fields

    names = {field.name for field in fields(runtime)}
    return runtime.but(precision=precision, **({"inference_precision": precision} if "inference_precision" in names else {}))


def key(values: dict) -> str:
    return "engines" if values["torch_precision"] == "auto" else f"engines_torch{values['torch_precision']}"


def forward_rates(context: Context, size: int, rounds: int, batches: int) -> dict:
    import numpy as np
    import torch

    from graft.backbones import create_backbone
    from graft.engines import installed
    from graft.runtime import Runtime, cpu_has_fast_bf16

    net = create_backbone(BACKBONE, weights="imagenet", img_size=size)
    pixels = torch.randint(0, 256, (32, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    folder = Path(tempfile.mkdtemp(prefix="engines-", dir=context.work))  # a cold graph cache: tracing is timed
    candidates = [("torch fp32", in_precision(Runtime(engine="torch"), "32"))]
    if cpu_has_fast_bf16():
        candidates.append(("torch bf16", in_precision(Runtime(engine="torch"), "bf16")))
    candidates += [(name, Runtime(engine=name, precision="32")) for name in ("onnxruntime", "openvino") if installed(name)]
    forwards, contexts, trace_s = {}, [], None
    for name, runtime in candidates:
        started = time.perf_counter()
        manager = frozen_pass(net, runtime=runtime, input_size=(3, size, size), folder=folder)
        forwards[name] = manager.__enter__()
        contexts.append(manager)
        if name == "onnxruntime":
            trace_s = time.perf_counter() - started
    try:
        reference = forwards["torch fp32"](pixels).numpy()
        differences = {name: float(np.abs(forward(pixels).numpy() - reference).max()) for name, forward in forwards.items()}
        spent: dict[str, list[float]] = {name: [] for name in forwards}
        names = list(forwards)
        for round_ in range(rounds):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                _, seconds = timed(lambda forward=forwards[name]: [forward(pixels) for _ in range(batches)])
                spent[name].append(seconds)
    finally:
        for manager in reversed(contexts):
            manager.__exit__(None, None, None)
    rates = {name: 32 * batches / statistics.median(times) for name, times in spent.items()}
    return {"size": size, "batch": 32, "rounds": rounds, "images_per_round": 32 * batches,
            "img_per_s": {k: round(v, 1) for k, v in rates.items()},
            "ratio_to_torch_fp32": {k: round(v / rates["torch fp32"], 2) for k, v in rates.items()},
            "max_abs_diff_from_torch_fp32": differences, "trace_s": round(trace_s, 1) if trace_s else None,
            "computed_in": {name: f"{forward.engine} {forward.precision}" for name, forward in forwards.items()}}


def extraction(context: Context, size: int, rounds: int, images: int, torch_precision: str) -> dict:
    from graft.backbones import create_backbone
    from graft.data.discover import Sample
    from graft.features import FeatureCache, backbone_features
    from graft.runtime import Runtime

    samples = [Sample(path, 0) for path in image_files(context.data / "train")[:images]]
    net = create_backbone(BACKBONE, weights="imagenet", img_size=size)
    default = Runtime.resolve(progress=False)
    on_torch = default.but(engine="torch") if torch_precision == "auto" else in_precision(default.but(engine="torch"),
                                                                                          torch_precision)
    on_onnx = default.but(engine="onnxruntime")
    root = context.work / "extraction"
    backbone_features(net, samples[:2], split="warm", runtime=on_onnx, cache=FeatureCache(root / "warm"))  # traces the graph
    count = iter(range(10**6))

    def rate(runtime) -> tuple[float, dict]:
        cache = FeatureCache(root / str(next(count)))  # cold
        features, seconds = timed(lambda: backbone_features(net, samples, split="train", runtime=runtime, cache=cache))
        return len(samples) / seconds, {"computed_in": f"{features.meta.get('engine', 'torch')} {features.meta.get('precision')}"}

    pair = interleaved(rounds, {"extraction": (lambda: rate(on_torch), lambda: rate(on_onnx))}, log=context.log)["extraction"]
    return {"images": len(samples), "size": size, "torch_computed_in": pair.baseline_extras[0]["computed_in"],
            "onnxruntime_computed_in": pair.extras[0]["computed_in"],
            "img_per_s": {"torch": pair.summary(1)["baseline"], "onnxruntime": pair.summary(1)["measured"]},
            "onnxruntime_over_torch": round(pair.ratio, 2), "rounds": pair.summary(3)["ratios"]}


def run(context: Context, *, size: int, rounds: int, batches: int, images: int, torch_precision: str) -> dict:
    forward = forward_rates(context, size, rounds, batches)
    context.log(f"forward pass, img/s: {forward['img_per_s']}; largest difference from torch fp32: "
                f"{forward['max_abs_diff_from_torch_fp32']}")
    extract = extraction(context, size, rounds, images, torch_precision)
    ratios = ", ".join(f"{name} {ratio}x" for name, ratio in forward["ratio_to_torch_fp32"].items() if name != "torch fp32")
    return {"summary": f"forward pass over torch fp32: {ratios}; extraction ONNX Runtime "
                       f"{extract['onnxruntime_over_torch']}x torch ({extract['torch_computed_in']})",
            "forward": forward, "extraction": extract}
