"""A run's ONNX export kept in graft's cache: the graph every CPU prediction of a run runs.

Where ONNX Runtime (or OpenVINO) is the engine (graft.engines.choice), a run folder predicts from
its whole classifier as one ONNX graph: `graft.load(RUN).predict` and `graft evaluate` in this
process (graft.classifier), `graft predict RUN` without importing torch at all (graft.loader), and
`graft serve`. That graph is the run's export, kept in $GRAFT_CACHE/engines/runs/KEY.onnx, where
KEY hashes what decides the file: the weights' values, the classes, the preprocessing, the backbone,
its cut and the head, the strategy and val accuracy the file's metadata names, and the versions of
what traces graphs (`export_path`). So a retrained model or a new torch is exported afresh, while an
identical model in another run folder (a second identical run) shares the export made for the
first; a damaged file is written again.

It is put together rather than traced: its backbone's graph plus the head's operators (about a
second once that graph is there). A run whose backbone kept its pretrained weights (the frozen
strategies) takes the graph that extracted its features; any other gives its weights to the
template of its backbone's structure (graft.engines.compile). Either graph is traced once per
backbone and size (about 10 s for Lite0) and kept for every later run, so no run traces a whole
network of its own. Only a head of another kind than graft's (Linear, ReLU, Dropout) makes the
whole classifier traced. Most runs on a CPU write it at the end of their training
(export_after_training), in the process that holds torch already; else the first prediction does.
A run whose backbone trained has made that graph already, to score val and test: its export takes
it (only the metadata, the saved run's, is written anew, and it is checked like any export), so such
a run gives its weights to the template once and never traces its own network.

Once imported, torch and timm alone hold several times the memory ONNX Runtime with the exported
classifier holds, and take seconds to load (docs/benchmarks.md, "Batch prediction", has the
figures). So
`graft predict RUN` writes a missing export in a child process (graft.loader) and predicts without
torch. A Classifier that has no run folder (graft.train's model before it is saved) gets the same
graph in a temporary file of this process, named by what decides its operators (`unsaved_graph`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import GraftError
from ..io import file_sha256, process_folder
from ..model_files import META_FILE, WEIGHTS_FILE
from ..runtime import cache_root

if TYPE_CHECKING:  # the module stays torch-free: graft predict asks it where a run's export is
    from .common import Exportable

FORMAT = 4  # bump when what the export holds changes: older exports are then written again (3: task, thresholds;
# 4: the backbone's pooled features as outputs, for the score of unknown images)
TRACERS = ("torch", "onnx", "onnxscript")  # their versions decide the graph
QUICK_PARITY_IMAGES = 16  # checked when a kept export is put together from a checked backbone graph


def export_path(folder: Path) -> Path:
    """Where the export of the model in `folder` is kept (it may not be there yet).

    Keyed by `model_identity`, not by graft.json's bytes (which name the run folder and differ
    between two identical runs), so identical models share one export."""
    versions: list[str | None] = []
    for package in TRACERS:
        try:
            versions.append(version(package))
        except PackageNotFoundError:
            versions.append(None)
    digest = hashlib.sha256(json.dumps([FORMAT, versions, model_identity(Path(folder))], sort_keys=True).encode())
    return cache_root() / "engines" / "runs" / f"{digest.hexdigest()[:32]}.onnx"


# What an export holds besides the weights, from graft.json: the graph's structure (backbone, cut,
# head), its input (data_config) and the metadata it carries (graft.predictor.model_metadata; a
# multi-label model's outputs are sigmoids and its metadata holds its thresholds).
EXPORTED_FIELDS = ("backbone", "cut", "data_config", "classes", "strategy")


def model_identity(folder: Path) -> dict | str:
    """What decides the export of the model in `folder`: graft.json's EXPORTED_FIELDS, the head's
    shape, the val accuracy, the task and thresholds, and the weights' values (`weights_digest`); for a graft.json that
    cannot be read as a record, its SHA-256 (OSError where it is missing)."""
    meta = Path(folder) / META_FILE
    try:
        record = json.loads(meta.read_text(encoding="utf-8"))
        strategy = record["config"]["strategy"]
        return {**{name: record[name] for name in EXPORTED_FIELDS},
                "head": {"hidden": strategy.get("hidden"), "dropout": strategy.get("dropout")},
                "val_accuracy": (record.get("accuracy") or {}).get("val"),
                "task": record.get("task", "single"), "thresholds": record.get("thresholds"),
                "weights": weights_digest(Path(folder) / WEIGHTS_FILE)}
    except (ValueError, KeyError, TypeError, AttributeError):
        return file_sha256(meta)


def weights_digest(path: Path) -> str:
    """SHA-256 of a safetensors file's tensors: their names, dtypes, shapes and bytes, without the
    file's free-form metadata, whose order safetensors does not keep (two saves of the same tensors
    can differ in their bytes there). Any other file: the SHA-256 of its bytes."""
    import struct

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        try:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
            header.pop("__metadata__", None)
        except (struct.error, ValueError, AttributeError, MemoryError, OverflowError):
            return file_sha256(path)
        digest.update(json.dumps(header, sort_keys=True).encode())
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def classifier_graph(classifier: Exportable, folder: Path | None, *, say=None) -> Path:
    """The ONNX graph of the whole classifier (uint8 pixels in; logits and probabilities out): the
    run's kept export where `folder` (its run folder) is given, written now where missing; else
    this process's graph of the classifier as it is now (`unsaved_graph`), made where missing.
    Raises GraftError (CompileError, ExportError) where it cannot be made, OSError where it cannot
    be written."""
    if folder is None:
        made = unsaved_graph(classifier)
        return made if made.exists() else write_export(classifier, made, say=say)
    path = export_path(folder)
    if path.exists():
        return path  # a damaged file: the caller removes it and asks again
    if say:
        say(f"Exporting {folder} to ONNX once for fast prediction (kept in {path.parent}).")
    return write_export(classifier, path, say=say)


def unsaved_graph(classifier: Exportable) -> Path:
    """Where this process keeps the graph of a classifier without a run folder (graft.train's model
    before it is saved), made or not yet: named by what decides its operators (the network's
    content, graft.engines.compile.content_key, its preprocessing and its task), so that a later
    predictor of the same model (the run's evaluation after probe-finetune's keep-the-probe check)
    and the run's kept export (export_after_training) take the graph made first. A file of this
    process alone, removed when it exits: no other process or run can mistake it."""
    from ..engines.compile import content_key

    decides = [content_key(classifier.model, classifier.data_config.input_size), repr(classifier.data_config),
               classifier.task]
    return _unsaved_folder() / f"{hashlib.sha256(json.dumps(decides).encode()).hexdigest()[:32]}.onnx"


@functools.cache
def _unsaved_folder() -> Path:
    return process_folder("graft-classifier-")


def write_export(classifier: Exportable, path: Path, *, graphs: tuple[Path, ...] = (), frozen_backbone: bool = False,
                 may_trace: bool = True, made: Path | None = None, say=None) -> Path:
    """Write the classifier's export at `path`: its backbone's graph (graft.export.onnx.write_onnx:
    from `graphs` or graft's own cache, traced there first where missing) plus the head, checked
    against torch on a few real images; a head of another kind is traced with the whole model, only
    where `may_trace`, and checked on graft export's full set. `made`: the classifier's graph made
    already in this process (`unsaved_graph`), taken as it is (nothing is traced, whatever
    `may_trace`), its metadata written anew and checked the same way. Returns `path`; raises
    GraftError or OSError (nothing is left half-written)."""
    from .onnx import export_onnx, head_operators, parity_images

    addable = head_operators(classifier.model.head) is not None
    if not (addable or may_trace or made is not None):
        raise GraftError("its head is not made of graft's own layers, and tracing the whole model was not asked for")
    # A backbone graph was checked against torch when it was made: the whole is checked on a few
    # real images (a second on a 2-core CPU), a traced export on graft export's full set.
    images = parity_images(classifier, QUICK_PARITY_IMAGES)[0] if addable else None
    export_onnx(classifier, path, check_images=images, graphs=graphs, frozen_backbone=frozen_backbone, made=made,
                log=say)
    return path


def export_after_training(folder: Path, classifier: Exportable, *, graphs: Path, frozen_backbone: bool,
                          may_trace: bool, say=None) -> Path | None:
    """Write the kept export of a run just trained (graft.train, on a CPU), in this process (torch
    is loaded already), where ONNX Runtime is the engine that would predict it here, so that its
    first prediction reads it at once. `graphs`: where the run's features were extracted (its
    backbone's graph may be there); `frozen_backbone`: the backbone kept its pretrained weights;
    `may_trace`: the run trained long enough to trace a head of another kind with the whole model
    (no matter where its evaluation made its graph already: that graph is taken, `unsaved_graph`).
    The path, or None where nothing was written (a failed export is said through `say`, and the run
    stands as it is: the first prediction tries again)."""
    from ..engines.choice import choose_engine, likely_device

    record = classifier.record
    precision = "bf16" if record is not None and record.inference_precision == "bf16" else "32"
    path = export_path(folder)
    if path.exists() or choose_engine("auto", device=likely_device(), precision=precision) == "torch":
        return None
    # the graph that scored val and test, where the backbone trained (a frozen one's features scored them)
    made = None if frozen_backbone else unsaved_graph(classifier)
    try:
        return write_export(classifier, path, graphs=(graphs,), frozen_backbone=frozen_backbone, may_trace=may_trace,
                            made=made if made and made.exists() else None, say=say)
    except (GraftError, OSError) as error:  # CompileError and ExportError are GraftErrors
        if say:
            say(f"Note: the run was not exported for fast prediction ({error}); graft predict will try again.")
        return None
