"""How well do training steps on small batches predict a step on the full batch? The check behind
auto's decision to fine-tune on a CPU (graft.advise.auto.FULL_BATCH_SPEEDUP).

    python -m benchmarks.calibration.step_estimate [--sizes 224,128] [--batches 4,8,16,32]
        [--rounds 3] [--key step_estimate]

Auto decides whether a fine-tuning epoch fits the --budget from a training step's time per image.
Timing the full batch (32) on a CPU held 1.45 GB above the loaded model at 224 px (issue 24, 5.3), so
auto times batches of 4 and takes the full batch to be FULL_BATCH_SPEEDUP times faster per image. This
measures, for Lite0 (every parameter training, as fine-tuning runs
it, in the precision graft trains in on this machine) at each input size, the time per image of a
step (graft.training.budget.seconds_per_image, the function auto uses, on batches already in memory)
at each batch size, in interleaved rounds (the median round is taken), and how much faster per image
the full batch is than each; and the peak memory above the loaded model of steps at
each batch size, each in a fresh process (VmHWM). Prints a markdown table and stores the rows under
KEY in benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from .._results import provenance, record
from .._runs import BACKBONE


def _model_and_runtime(img_size: int):
    from torch import nn

    from graft.backbones import create_backbone
    from graft.model import GraftModel
    from graft.runtime import Runtime

    backbone = create_backbone(BACKBONE, img_size=img_size)
    model = GraftModel(backbone, nn.Linear(backbone.num_features, 10))
    model.unfreeze()
    return model, Runtime.resolve()


def _loader(img_size: int, batch: int, steps: int):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    count = batch * (steps + 1)
    generator = torch.Generator().manual_seed(batch)
    pixels = torch.randn(count, 3, img_size, img_size, generator=generator)
    return DataLoader(TensorDataset(pixels, torch.randint(0, 10, (count,), generator=generator)), batch_size=batch)


def _steps(batch: int) -> int:
    from graft.advise.auto import SMALL_BATCH

    return 4 if batch == SMALL_BATCH else 2  # as Run._step_seconds times them


def times(img_size: int, batches: list[int], rounds: int) -> dict[int, float]:
    """The median round's seconds per image of a training step at each batch size."""
    from graft.training.budget import seconds_per_image

    model, runtime = _model_and_runtime(img_size)
    loaders = {batch: _loader(img_size, batch, _steps(batch)) for batch in batches}
    measured: dict[int, list[float]] = {batch: [] for batch in batches}
    for _ in range(rounds):
        for batch in batches:
            measured[batch].append(seconds_per_image(model, loaders[batch], runtime=runtime, steps=_steps(batch)))
    return {batch: statistics.median(values) for batch, values in measured.items()}


def _peak_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def memory_of(img_size: int, batch: int) -> None:
    """(In a fresh process) print the MB a step at `batch` took above the loaded model."""
    from graft.training.budget import seconds_per_image

    model, runtime = _model_and_runtime(img_size)
    loader = _loader(img_size, batch, _steps(batch))
    before = _peak_kb()
    seconds_per_image(model, loader, runtime=runtime, steps=_steps(batch))
    print(json.dumps({"above_model_mb": round((_peak_kb() - before) / 1024)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="224,128")
    parser.add_argument("--batches", default="4,8,16,32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--key", default="step_estimate")
    parser.add_argument("--memory-of", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(value) for value in args.sizes.split(",")]
    batches = [int(value) for value in args.batches.split(",")]
    if args.memory_of is not None:
        memory_of(sizes[0], args.memory_of)
        return
    from graft.advise.auto import FULL_BATCH_SPEEDUP, SMALL_BATCH
    from graft.runtime import resolve_precision

    about = provenance(parameters={**vars(args), "precision": resolve_precision("auto")})
    rows = []
    print("| input | batch | s/image (median of rounds) | full batch's speed-up over this | auto's estimate / measured | MB above the model |")
    print("|---|---|---|---|---|---|")
    for size in sizes:
        measured = times(size, batches, args.rounds)
        full = max(batches)
        estimate = measured[SMALL_BATCH] / FULL_BATCH_SPEEDUP
        for batch in batches:
            child = subprocess.run([sys.executable, "-m", "benchmarks.calibration.step_estimate", "--sizes", str(size),
                                    "--memory-of", str(batch)], capture_output=True, text=True, check=True)
            memory = json.loads(child.stdout.strip().splitlines()[-1])["above_model_mb"]
            row = {"img_size": size, "batch": batch, "seconds_per_image": round(measured[batch], 5),
                   "speedup_of_full": round(measured[batch] / measured[full], 3), "above_model_mb": memory}
            if batch == full:
                row["estimate_over_measured"] = round(estimate / measured[full], 3)
            rows.append(row)
            print(f"| {size} px | {batch} | {measured[batch]:.4f} | {row['speedup_of_full']:.2f}x | "
                  f"{row.get('estimate_over_measured', '')} | {memory} |")
    record(args.key, {"rows": rows}, about)


if __name__ == "__main__":
    main()
