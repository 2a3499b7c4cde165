"""Going on with an interrupted run: what run.json keeps, and the check that the data is still the
data. (Each fit's own state is saved and restored by graft.training.resume_point.ResumePoint.)

Every run folder holds run.json from its start: the data, the config as given, auto's timed
decisions once made (so a resumed run runs them as made instead of measuring again), and a
fingerprint of the classes and files of each split. `graft train --resume RUN`
(graft.training.pipeline.resume_run) refuses data that changed since, saying what changed; the
features come back from the cache and each fit from its last completed epoch, so the run ends with
the same model as a run never interrupted. This module imports no Lightning: a linear probe never needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import GraftError
from ..io import write_json_atomic

if TYPE_CHECKING:
    from ..config import TrainConfig
    from ..data.discover import DataSplits

RESUME_FILE = "run.json"
RESUME_FORMAT = 2  # 1: {"data", "config"} only (graft before 0.2): no decisions, no data check
SPLITS = ("train", "val", "test")


def write_resume_file(run_dir: Path, *, data: str, config: TrainConfig, decisions: dict[str, Any],
                      splits: DataSplits | None = None) -> None:
    """run.json: what `graft train --resume` needs to run the same thing again. `splits`: the data as
    the run found it (kept from the first write on: later writes only add decisions)."""
    from ..record import read_json

    path = Path(run_dir) / RESUME_FILE
    saved = read_json(path) if splits is None and path.exists() else {}
    write_json_atomic(path, {"format": RESUME_FORMAT, "data": data, "config": config.to_dict(),
                             "decisions": decisions,
                             "found": data_fingerprint(splits) if splits is not None else saved.get("found")})


def read_resume_file(run_dir: Path) -> dict[str, Any]:
    """What run.json holds (decisions {} and no fingerprint for a run.json of format 1)."""
    from ..record import read_json

    path = Path(run_dir) / RESUME_FILE
    if not path.exists():
        raise GraftError(f"{run_dir}: not a run folder graft can resume (no {RESUME_FILE}); give the folder "
                         "an interrupted `graft train` made, e.g. runs/finetune-20261130-101500.")
    saved = read_json(path)
    if not isinstance(saved, dict) or not isinstance(saved.get("data"), str) or not isinstance(saved.get("config"), dict):
        raise GraftError(f"{path}: not a run.json graft wrote (it needs the data and the config); the file was "
                         "edited or damaged, so this run cannot be resumed: start it again with graft train.")
    return {"decisions": {}, "found": None, **saved}


def data_fingerprint(splits: DataSplits) -> dict[str, Any]:
    """The classes, and per split the number of images and a fingerprint of their paths, labels,
    sizes and modification times."""
    from ..fingerprint import files_fingerprint

    found: dict[str, Any] = {"classes": list(splits.classes)}
    for split in SPLITS:
        samples = getattr(splits, split)
        found[split] = {"images": len(samples),
                        "files": files_fingerprint([s.path for s in samples], [s.label for s in samples])}
    return found


def check_same_data(run_dir: Path, saved: dict[str, Any] | None, splits: DataSplits) -> None:
    """Refuse to resume on data that changed since the run started, saying what changed."""
    if not saved:
        return  # a run.json from before the check: nothing to compare with
    now = data_fingerprint(splits)
    changes = []
    if now["classes"] != saved["classes"]:
        added = [name for name in now["classes"] if name not in saved["classes"]]
        gone = [name for name in saved["classes"] if name not in now["classes"]]
        changes.append("the classes changed (" + "; ".join(
            [*(["added " + ", ".join(added)] if added else []), *(["removed " + ", ".join(gone)] if gone else []),
             *([] if added or gone else ["their order"])]) + ")")
    for split in SPLITS:
        before, after = saved[split], now[split]
        if before["files"] != after["files"]:
            count = (f"{before['images']:,} images then, {after['images']:,} now" if before["images"] != after["images"]
                     else f"still {after['images']:,} images, but some were replaced, edited or relabelled")
            changes.append(f"the {split} images changed ({count})")
    if changes:
        raise GraftError(f"{run_dir}: the data changed since this run started: {'; '.join(changes)}. A resumed run "
                         "must see the data it started with; put the data back as it was, or start a new run "
                         "with graft train.")
