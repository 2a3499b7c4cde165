"""Inference engines for frozen forward passes: speed and agreement against eager PyTorch.

    python benchmarks/engines.py [--data ../shared/datasets/flowers-dev] [--size 224] [--rounds 3]

1. The forward pass alone: EfficientNet-Lite0 (ImageNet weights) at --size px on random uint8
   batches of 32 already in memory, in interleaved rounds, for each engine this machine has: torch
   fp32, torch bf16 autocast (only where the CPU computes bf16 natively), ONNX Runtime, OpenVINO
   (f32). Images/s (median of rounds), the ratio to torch fp32, and the largest feature difference
   from torch fp32. The time to trace the graph is reported apart (it is paid once per network).
2. Feature extraction as graft runs it (decode, resize, crop, forward, into the cache): every image
   of DATA/train with `--engine torch` (at graft's default precision here) and `--engine onnxruntime`
   (graph already traced), each into a fresh cache, alternating, --rounds times. Ratio of the medians.
Writes the figures under "engines" in benchmarks/results.json ("engines_fp32" where graft's torch
path runs fp32: on CPUs without native bf16, or with GRAFT_CPU_BF16=0; "engines_amx" where it runs
bf16 on a CPU with AMX).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _results import machine as this_machine
from _results import store


def forward_rates(size: int, rounds: int, batches: int) -> dict:
    import numpy as np
    import torch

    from graft.backbones import create_backbone
    from graft.engines import frozen_forward, installed
    from graft.runtime import Runtime, cpu_has_fast_bf16

    net = create_backbone("tf_efficientnet_lite0", weights="imagenet", img_size=size)
    pixels = torch.randint(0, 256, (32, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    folder = Path(tempfile.mkdtemp(prefix="graft-bench-engines-"))
    candidates = [("torch fp32", Runtime(engine="torch", precision="32"))]
    if cpu_has_fast_bf16():
        candidates.append(("torch bf16", Runtime(engine="torch", precision="bf16")))
    candidates += [(name, Runtime(engine=name, precision="32")) for name in ("onnxruntime", "openvino") if installed(name)]
    forwards, trace_s = {}, None
    stack = []
    for name, runtime in candidates:
        started = time.perf_counter()
        context = frozen_forward(net, runtime=runtime, images=10**6, input_size=(3, size, size), folder=folder)
        forwards[name] = context.__enter__()
        stack.append(context)
        if name == "onnxruntime":
            trace_s = time.perf_counter() - started
    reference = forwards["torch fp32"](pixels).numpy()
    differences = {name: float(np.abs(forward(pixels).numpy() - reference).max()) for name, forward in forwards.items()}
    times: dict[str, list[float]] = {name: [] for name in forwards}
    for _ in range(rounds):
        for name, forward in forwards.items():
            started = time.perf_counter()
            for _ in range(batches):
                forward(pixels)
            times[name].append(time.perf_counter() - started)
    for context in reversed(stack):
        context.__exit__(None, None, None)
    rates = {name: 32 * batches / statistics.median(spent) for name, spent in times.items()}
    return {"size": size, "batch": 32, "rounds": rounds, "images_per_round": 32 * batches,
            "img_per_s": {k: round(v, 1) for k, v in rates.items()},
            "ratio_to_torch_fp32": {k: round(v / rates["torch fp32"], 2) for k, v in rates.items()},
            "max_abs_diff_from_torch_fp32": differences, "trace_s": round(trace_s, 1) if trace_s else None}


def extraction(data: Path, size: int, rounds: int) -> dict:
    from graft.backbones import create_backbone
    from graft.data.discover import find_data
    from graft.features import FeatureCache
    from graft.features.extract import backbone_features
    from graft.runtime import Runtime

    samples = find_data(data).train
    net = create_backbone("tf_efficientnet_lite0", weights="imagenet", img_size=size)
    default = Runtime.resolve(progress=False)
    root = Path(tempfile.mkdtemp(prefix="graft-bench-extract-"))
    # Every cache below sits in `root`, so all share root/engines: the graph is traced once, here,
    # outside the timing (graft keeps it on disk for every later run).
    backbone_features(net, samples[:2], split="warm", runtime=default.but(engine="onnxruntime"),
                      cache=FeatureCache(root / "features-warm"))
    times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
    for index in range(rounds):
        for engine in times:
            cache = FeatureCache(root / f"features-{engine}-{index}")
            started = time.perf_counter()
            backbone_features(net, samples, split="train", runtime=default.but(engine=engine), cache=cache)
            times[engine].append(time.perf_counter() - started)
    medians = {engine: statistics.median(spent) for engine, spent in times.items()}
    return {"data": str(data), "images": len(samples), "size": size, "torch_precision": default.precision,
            "seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
            "img_per_s": {k: round(len(samples) / v, 1) for k, v in medians.items()},
            "speed_ratio_onnxruntime_to_torch": round(medians["torch"] / medians["onnxruntime"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets/flowers-dev")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=4, help="Batches of 32 per engine per round (forward pass).")
    args = parser.parse_args()
    import torch

    machine = {**this_machine(), "threads": torch.get_num_threads()}
    forward = forward_rates(args.size, args.rounds, args.batches)
    print("forward pass, img/s:", forward["img_per_s"], "ratio to torch fp32:", forward["ratio_to_torch_fp32"])
    print("largest difference from torch fp32:", forward["max_abs_diff_from_torch_fp32"], "trace:", forward["trace_s"], "s")
    extract = extraction(args.data, args.size, args.rounds) if args.data.exists() else None
    if extract:
        print(f"extraction of {extract['images']} images: img/s {extract['img_per_s']}, "
              f"ONNX Runtime {extract['speed_ratio_onnxruntime_to_torch']}x torch ({extract['torch_precision']})")
    # one key per precision graft's torch path runs in (GRAFT_CPU_BF16=0 measures the fp32 path of an
    # AVX2 CPU), and AMX's bf16 apart from AVX-512's
    key = "engines" if extract is None or extract["torch_precision"] == "bf16" else "engines_fp32"
    key = f"{key}_amx" if machine["amx"] and key == "engines" else key
    store({key: {"machine": machine, "forward": forward, "extraction": extract, "date": time.strftime("%Y-%m-%d")}})


if __name__ == "__main__":
    main()
