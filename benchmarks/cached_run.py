"""A second identical linear-probe run over the first: what the cache saves.

Two identical `graft.train(strategy="linear-probe")` runs one after the other, into a fresh feature
cache for each pair: the first extracts the features, fits, audits and reports; the second reads
back what the first stored (features, the fit, the audit's out-of-fold probabilities, the record
that every file was readable). Twice: as a user runs it (report and audit included), and without
report and audit. Data: the first TRAIN_PER_CLASS images of each class of DATA/train, VAL_PER_CLASS
of DATA/test as val. Speed-up: first run's seconds / second run's. Target: at least 20x.
"""

from __future__ import annotations

import statistics

from ._runs import Context, Parameter, class_subset, timed

PARAMETERS = {
    "train_per_class": Parameter(200, 4, "training images per class (DATA/train)"),
    "val_per_class": Parameter(50, 2, "validation images per class (DATA/test)"),
    "img_size": Parameter(0, 64, "input size in px; 0: the backbone's own (224)"),
    "rounds": Parameter(1, 1, "pairs of runs of each kind, each pair with a fresh cache"),
}
TARGET = 20.0


def run(context: Context, *, train_per_class: int, val_per_class: int, img_size: int, rounds: int) -> dict:
    import graft

    data = class_subset(context.data, context.work / "data", train_per_class=train_per_class,
                        val_per_class=val_per_class)
    figures: dict = {}
    for label, extras in (("as_typed", {}), ("no_report_no_audit", {"report": False, "audit": False})):
        pairs = []
        for index in range(rounds):
            cache = context.work / f"cache-{label}-{index}"

            def train(name: str, cache=cache, extras=extras):
                return graft.train(data, strategy="linear-probe", out=context.work / "runs", name=name, cache_dir=cache,
                                   img_size=img_size or None, progress=False, log=None, **extras)

            prefix = f"{label}-{index}"
            first, first_s = timed(lambda train=train, prefix=prefix: train(f"{prefix}-first"))
            second, second_s = timed(lambda train=train, prefix=prefix: train(f"{prefix}-second"))
            pairs.append({"first_s": round(first_s, 2), "second_s": round(second_s, 2),
                          "speedup": round(first_s / second_s, 1),
                          "same_val_accuracy": first.metrics.val_accuracy == second.metrics.val_accuracy,
                          "second_timings": second.metrics.timings})
            context.log(f"{label}, pair {index + 1}: {pairs[-1]['first_s']} s, then {pairs[-1]['second_s']} s")
        figures[label] = {"speedup": statistics.median(pair["speedup"] for pair in pairs), "pairs": pairs}
    return {"summary": f"second run {figures['as_typed']['speedup']}x faster as typed, "
                       f"{figures['no_report_no_audit']['speedup']}x without report and audit (target >= {TARGET:.0f}x)",
            **figures, "target": TARGET, "met": figures["as_typed"]["speedup"] >= TARGET}
