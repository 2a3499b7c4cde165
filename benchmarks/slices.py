"""Eager torch on the CPU: a batch of 64 in one run, against slices of 16 and of 4 (graft's
PIXELS_PER_RUN at 224 px): images/s and peak RSS.

    python benchmarks/slices.py [--size 224] [--rounds 2]

Each setting runs in a process of its own (EfficientNet-Lite0, random weights: the speed does not
depend on them; 2 threads; channels_last; inference mode), so that its peak RSS (ru_maxrss) is its
own: a warm-up pass over the batch, then --rounds timed passes. fp32 always; bf16 autocast only where
the CPU computes bf16 natively (graft.runtime.cpu_has_fast_bf16). Writes "slices" in
benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

from _results import store

CHILD = """
import json, resource, sys, time
import timm, torch
torch.set_num_threads(2)
step, precision, size, rounds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval().to(memory_format=torch.channels_last)
batch = torch.randn(64, 3, size, size).to(memory_format=torch.channels_last)
def run():
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for start in range(0, len(batch), step):
            net(batch[start:start + step])
run()
started = time.perf_counter()
for _ in range(rounds):
    run()
rate = rounds * len(batch) / (time.perf_counter() - started)
print(json.dumps({"img_s": round(rate, 1), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from graft.runtime import cpu_has_fast_bf16

    results = {}
    for precision in ["32"] + (["bf16"] if cpu_has_fast_bf16() else []):
        for step in (64, 16, 4):
            out = subprocess.run([sys.executable, "-c", CHILD, str(step), precision, str(args.size), str(args.rounds)],
                                 capture_output=True, text=True, check=True).stdout
            results[f"{precision} slices of {step}"] = json.loads(out.strip().splitlines()[-1])
            print(f"{precision:>4}, slices of {step:>2}: {results[f'{precision} slices of {step}']}", flush=True)
    store({"slices": {"size": args.size, "machine": platform.processor() or platform.machine(), "results": results}})


if __name__ == "__main__":
    main()
