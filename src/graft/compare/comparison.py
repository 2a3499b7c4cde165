"""The course's experiment, for the user's own data: several strategies, one budget, one table.

The course ends with a table of frozen, unfrozen and from-scratch training (validation accuracy
after 1 and after 5 epochs, time per epoch). `compare` runs any strategies on the same data with
the same seed and the same number of epochs of each strategy's main training phase, and writes that
table (Markdown and JSON) and two plots: validation accuracy per epoch, and time.

What "epoch" means per strategy (its main phase, `Strategy.main_phase`):
- feature-extract: epochs of the head on cached features of augmented views;
- finetune, partial, scratch: epochs on images (finetune and partial first train the head on cached
  features, which takes seconds; that head is their epoch 0);
- truncate: epochs of the head on the cut backbone's cached features;
- linear-probe: one logistic-regression fit, no epochs: its accuracy is drawn as a flat line.
Early stopping is off (patience = epochs), so every strategy gets all its epochs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import AUTO, TrainConfig
from ..errors import GraftError
from ..io import check_output_folder, new_run_dir, write_json_atomic, write_text_atomic

DEFAULT_STRATEGIES = ("linear-probe", "feature-extract", "finetune", "scratch")


@dataclass
class StrategyRow:
    """One strategy's line of the table, plus its per-epoch curve for the plots."""

    strategy: str
    run_dir: str
    val_acc_first: float  # after the first epoch of the main phase (linear-probe: its one fit)
    val_acc_last: float  # after the last epoch
    best_val_acc: float  # of the model kept (the best epoch), evaluated as saved
    test_acc: float | None
    epoch_time_s: float | None  # mean time of a main-phase epoch; None for linear-probe
    features_s: float  # one-off: frozen-backbone features (cached for the next run)
    total_s: float
    trainable_params: int
    peak_rss_mb: float | None
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, val accuracy); epoch 0 = head phase

    @property
    def epochs_run(self) -> int:
        return max((epoch for epoch, _ in self.curve), default=0)


@dataclass
class Comparison:
    data: str
    backbone: str
    epochs: int
    seed: int
    rows: list[StrategyRow]
    folder: Path
    peak_memory_note: str = ""
    figure: str = "val acc"  # what the val columns hold: "val mAP" for several labels per image (macro mAP)

    def to_dict(self) -> dict:
        return {"data": self.data, "backbone": self.backbone, "epochs": self.epochs, "seed": self.seed,
                "figure": self.figure, "peak_memory_note": self.peak_memory_note, "strategies": [asdict(row) for row in self.rows]}

    def to_markdown(self) -> str:
        e = self.epochs
        # one epoch: "after epoch 1" and "after the last epoch" are the same column
        last = [f"{self.figure} @ {e} epochs"] if e != 1 else []
        lines = [
            f"# Strategy comparison: {self.data}",
            "",
            f"Backbone `{self.backbone}`, {e} epoch{'s' if e != 1 else ''} of each strategy's main phase, seed {self.seed}.",
            "",
            "| " + " | ".join(["strategy", f"{self.figure} @ 1 epoch", *last, f"{self.figure} (model kept)",
                              self.figure.replace("val", "test"),
                              "time / epoch (s)", "features (s)", "total (s)", "trainable params", "peak RSS (MB)"]) + " |",
            "|" + "---|" * (9 + len(last)),
        ]
        for row in self.rows:
            cells = [row.strategy, pct(row.val_acc_first), *([pct(row.val_acc_last)] if last else []),
                     pct(row.best_val_acc), pct(row.test_acc), num(row.epoch_time_s, ".1f"), f"{row.features_s:.1f}",
                     f"{row.total_s:.1f}", f"{row.trainable_params:,}", num(row.peak_rss_mb, ".0f")]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "linear-probe fits a logistic regression once: it has no epochs, so both columns show that fit.",
                  "finetune and partial start from the head trained on the frozen base (epoch 0 in the plot).",
                  self.peak_memory_note, "", "![validation accuracy per epoch](accuracy.png)", "",
                  "![time](time.png)", ""]
        return "\n".join(lines)


def compare(
    data: str | Path,
    config: TrainConfig | None = None,
    *,
    strategies: str | Sequence[str] = DEFAULT_STRATEGIES,
    epochs: int = 3,
    log: Callable[[str], None] | None = print,
    progress: bool = True,
    **options,
) -> Comparison:
    """Train each strategy on `data` with the same epochs and seed; write the table and the plots.

    `config` and the keyword `options` are those of `graft.train` (backbone, img_size, batch_size,
    lr, views, val_split, seed, ...), the same for every strategy; compare varies only the strategy
    and its epochs. `strategies` is a list of names or one comma-separated string. `head_epochs`
    only sets the head warm-up of strategies whose main phase is on images (seconds on cached
    features); where the head phase is the main phase it gets `epochs`. `out` and `name` place the
    comparison's folder, which holds compare.md, compare.json, accuracy.png, time.png and one run
    folder per strategy.
    """
    from ..strategies import get_strategy
    from ..training.pipeline import train

    say = log or (lambda message: None)
    if isinstance(strategies, str):
        strategies = strategies.split(",")
    strategies = list(dict.fromkeys(s.strip() for s in strategies if s.strip()))  # keep order, drop repeats
    if not strategies:
        raise GraftError("--strategies is empty: name at least one, e.g. linear-probe,finetune,scratch.")
    for fixed in ("strategy", "patience"):
        if fixed in options:
            raise GraftError(f"compare sets {fixed} itself, the same for every strategy; leave it out.")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise GraftError(f"--epochs {epochs}: must be a whole number, at least 1.")
    if AUTO in strategies:
        raise GraftError("--strategies auto: compare runs named strategies; use `graft advise DATA` to choose one.")
    plans = [get_strategy(name) for name in strategies]  # unknown names fail before anything trains
    config = (config or TrainConfig()).replace(**options)
    for plan in plans:
        plan.check(config.replace(strategy=plan.name))

    check_output_folder(config.output.out)
    folder = new_run_dir(config.output.out, config.output.name or f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
    rows = []
    memory_note, several = "", False
    for index, plan in enumerate(plans, 1):
        say(f"[{index}/{len(plans)}] {plan.name}")
        head_epochs = epochs if plan.main_phase == "head" else config.optim.head_epochs
        memory_note = _reset_peak_memory()
        run = train(data, config.replace(strategy=plan.name, epochs=epochs, head_epochs=head_epochs, patience=epochs,
                                         out=str(folder), name=plan.name),
                    log=log, progress=progress)
        rows.append(_row(plan, run, peak_rss_mb=_peak_rss_mb()))
        several = run.record.task == "multilabel"
    comparison = Comparison(data=str(data), backbone=config.strategy.backbone, epochs=epochs, seed=config.data.seed,
                            rows=rows, folder=folder, peak_memory_note=memory_note,
                            figure="val mAP" if several else "val acc")
    _write(comparison)
    return comparison


def _row(plan, run, *, peak_rss_mb: float | None) -> StrategyRow:
    metrics = run.metrics
    phase = plan.main_phase
    main = [row for row in run.history if row.phase == phase] if phase else []
    key = "val_map" if run.record.task == "multilabel" else "val_acc"  # the figure fits follow
    curve = [(row.epoch, getattr(row, key)) for row in main if getattr(row, key) is not None]
    head = [getattr(row, key) for row in run.history if row.phase == "head" and getattr(row, key) is not None]
    if phase == "images" and head:  # the head the image phase started from: epoch 0
        curve.insert(0, (0, max(head)))
    if not curve:  # linear-probe: one fit, one number
        curve = [(0, metrics.val_accuracy)]
    trained = [value for epoch, value in curve if epoch >= 1]
    return StrategyRow(
        strategy=plan.name,
        run_dir=str(run.run_dir),
        val_acc_first=trained[0] if trained else metrics.val_accuracy,
        val_acc_last=trained[-1] if trained else metrics.val_accuracy,
        best_val_acc=metrics.val_accuracy,
        test_acc=metrics.test_accuracy,
        epoch_time_s=sum(row.epoch_time_s or 0.0 for row in main) / len(main) if main else None,
        features_s=metrics.timings.get("features_s", 0.0),
        total_s=metrics.timings["total_s"],
        trainable_params=metrics.params.trained,
        peak_rss_mb=peak_rss_mb,
        curve=curve,
    )


def _reset_peak_memory() -> str:
    """Reset this process's peak-RSS counter so each strategy's peak is its own (Linux only)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # 5: reset the peak resident set size (VmHWM) to the current RSS
        return "Peak RSS: the graft process's own peak during each strategy (data-loading workers not included)."
    except OSError:
        return "Peak RSS: the process's peak so far (this system cannot reset it between strategies)."


def _peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as handle:
            line = next(line for line in handle if line.startswith("VmHWM"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write(comparison: Comparison) -> None:
    from .plots import accuracy_plot, time_plot

    folder = comparison.folder
    accuracy_plot(comparison, folder / "accuracy.png")
    time_plot(comparison, folder / "time.png")
    write_json_atomic(folder / "compare.json", comparison.to_dict())
    write_text_atomic(folder / "compare.md", comparison.to_markdown())


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
