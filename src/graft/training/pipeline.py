"""graft.train: from a folder of labelled images to a trained, evaluated, saved classifier.

`train` reads top to bottom as the whole procedure; each step is a function of its own over one
`Run` (graft.training.run), and every decision about what trains is the strategy's
(graft.strategies): this module names none.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..classifier import Classifier
from ..config import TrainConfig
from ..errors import GraftError
from ..evaluation import Evaluation, MultiLabelEvaluation
from ..record import EpochRow, RunMetrics, RunRecord
from ..runtime import use_cache_dir
from .finish import evaluate, export, report, save
from .phases import head_phase, image_phase
from .resume import read_resume_file
from .run import Run
from .setup import start


@dataclass
class RunResult:
    run_dir: Path
    classifier: Classifier
    record: RunRecord  # what graft.json holds
    metrics: RunMetrics  # what metrics.json holds

    @property
    def history(self) -> list[EpochRow]:
        return self.metrics.history

    @property
    def val(self) -> Evaluation | MultiLabelEvaluation:
        return self.metrics.val


def train(
    data: str | Path,
    config: TrainConfig | None = None,
    *,
    log: Callable[[str], None] | None = print,
    progress: bool = True,
    resume: str | Path | None = None,
    **options,
) -> RunResult:
    """Train a classifier on `data` by transfer learning.

    `config` holds every option (graft.config.TrainConfig; `graft train --help` explains each);
    keyword `options` override it by name, so `train("photos/", strategy="partial", epochs=3)` and
    `train("photos/", TrainConfig().replace(strategy="partial"), epochs=3)` are the same run.
    `epochs` counts image-phase epochs, `head_epochs` epochs of the head on cached features.
    `log` receives progress sentences (None: silent); `progress` shows bars or per-epoch lines.
    `resume`: the folder of an interrupted run (use `resume_run`, which reads its data and config):
    the run goes on in that folder and ends with the same model as a run never interrupted.
    """
    config = (config or TrainConfig()).replace(**options)
    with use_cache_dir(config.output.cache_dir):  # --cache-dir holds everything the run caches
        # 1. The data, the strategy (measured from the data under auto), the backbone and a new head, the run folder.
        run = start(data, config, log=log or (lambda message: None), progress=progress,
                    resume=Path(resume) if resume is not None else None)
        with interrupts_named(run):
            # 2. Head phase: the backbone frozen, its features once per image and view (cached), the head on them.
            run.enter("the head phase (features of the frozen backbone, then the head)")
            head_phase(run)
            # 3. Image phase: the stages the strategy names train on images; its hooks run before and after.
            run.enter("the image phase")
            image_phase(run)
            # 4. Evaluate the model kept on val and test.
            run.enter("the evaluation")
            evaluate(run)
            # 5. Save it: model.safetensors + graft.json, written whole.
            save(run)
            run.saved = True
            classifier = Classifier(run.model, run.splits.classes, run.record, runtime=run.runtime, folder=run.run_dir)
            # 6. The report: curves, confusion matrices, the most confident mistakes and where the model looked.
            run.enter("the report")
            report(run)
            # 7. The run's ONNX export in the cache (CPU), so that its first predict needs no torch; metrics.json.
            run.enter("the export for fast prediction")
            export(run, classifier)
        assert run.record is not None and run.metrics is not None  # set by save
        return RunResult(run_dir=run.run_dir, classifier=classifier, record=run.record, metrics=run.metrics)


def resume_run(run_dir: str | Path, *, log: Callable[[str], None] | None = print, progress: bool = True) -> RunResult:
    """Go on with an interrupted run in its own folder: the same data, the same config, the same end."""
    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").exists():
        raise GraftError(f"{run_dir}: this run finished; there is nothing to resume. Use it: graft predict {run_dir} IMAGE...")
    saved = read_resume_file(run_dir)
    config = TrainConfig.from_dict(saved["config"], source=str(run_dir / "run.json"))
    return train(saved["data"], config, log=log, progress=progress, resume=run_dir)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: what was being done, and where the run folder is."""

    def __init__(self, run_dir: Path, stage: str, saved: bool):
        super().__init__(stage)
        self.run_dir, self.stage, self.saved = run_dir, stage, saved

    def describe(self) -> str:
        if self.saved:
            return (f"Interrupted during {self.stage}: the model in {self.run_dir} is saved and complete "
                    "(only the report or metrics.json may be missing).")
        return (f"Interrupted during {self.stage}: no model was saved yet. Go on from the last completed epoch with: "
                f"graft train --resume {shlex.quote(str(self.run_dir))}")


@contextmanager
def interrupts_named(run: Run) -> Iterator[None]:
    """Ctrl-C becomes RunInterrupted, which says what the run was doing and how to go on."""
    try:
        yield
    except KeyboardInterrupt as interrupt:
        if isinstance(interrupt, RunInterrupted):
            raise
        raise RunInterrupted(run.run_dir, run.stage, run.saved) from None
