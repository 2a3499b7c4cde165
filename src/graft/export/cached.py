"""A run's ONNX export kept in graft's cache, so that `graft predict RUN` runs without torch.

Once imported, torch and timm alone hold about 720 MB and take seconds to load (`python -c "import
torch, timm"`: VmHWM 718 MB on the 2-core EPYC); ONNX Runtime with the exported classifier holds
about 200 MB (docs/benchmarks.md, "Batch prediction"). So where ONNX Runtime is the engine a
prediction would run in here (graft.engines.choice), `graft predict RUN` predicts from the run's
export: the first time, a child process writes it (graft.export.onnx, with its parity check on real
images) to $GRAFT_CACHE/engines/runs/KEY.onnx while this process, which never imports torch, waits;
later predicts only open the file (a damaged one is exported again). Most runs on such a CPU are
exported at the end of their training instead, in the process that holds torch already
(export_after_training), so that even their first predict starts at once, as its backbone's graph
plus the head's operators (about a second): a run whose backbone kept its pretrained weights (the
frozen strategies) takes that backbone's graph from the engines' cache; a fine-tuned one gives its
weights to the template of its backbone's structure (graft.engines.compile). Either graph is traced
once per backbone and size (about 10 s for Lite0) and kept for every later run. A run whose head is
of another kind is traced whole where it trained for minutes, else waits for the child. KEY hashes
graft.json, which seals the weights' SHA-256, and the versions of what traces the graph, so a
retrained model or a new torch is exported afresh.

The export resizes images with Pillow where `graft.load(RUN).predict` uses torchvision's uint8
kernels, so probabilities can differ slightly (graft.export.exported); benchmarks/predict.py counts
the top-1 answers that change.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..engines.choice import choose_engine
from ..errors import GraftError, ModelFileError
from ..io import file_sha256
from ..runtime import cache_root, resolve_cpu_precision
from .exported import ExportedModel
from .files import META_FILE, read_record

FORMAT = 1  # bump when what the export holds changes: older exports are then written again
TRACERS = ("torch", "onnx", "onnxscript")  # their versions decide the graph
# Device files of the GPUs torch uses (NVIDIA; AMD's ROCm): where one exists, torch decides.
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd")


QUICK_PARITY_IMAGES = 16  # checked when a kept export is put together from a checked backbone graph


def export_path(folder: Path) -> Path:
    """Where the export of the model in `folder` is kept (it may not be there yet)."""
    versions: list[str | None] = []
    for package in TRACERS:
        try:
            versions.append(version(package))
        except PackageNotFoundError:
            versions.append(None)
    digest = hashlib.sha256(json.dumps([FORMAT, versions, file_sha256(folder / META_FILE)]).encode())
    return cache_root() / "engines" / "runs" / f"{digest.hexdigest()[:32]}.onnx"


def gpu_may_be_present() -> bool:
    """Whether torch might run on a GPU here, known without importing torch."""
    return any(Path(device).exists() for device in GPU_DEVICE_FILES)


def exported_run(model: str | Path, *, engine: str = "auto", images: int, log=None) -> ExportedModel | None:
    """The run's export ready in ONNX Runtime, where that is the engine `engine` ("auto" or
    "onnxruntime") means for `images` forward passes on this machine; None where torch should predict
    (graft.load). Writes the export first when it is not in the cache.

    An export that fails (a backbone the tracer cannot follow, a changed answer, a cache that cannot
    be written) is an error under --engine onnxruntime; under auto it is reported through `log`
    (default: stderr) and None is returned.
    """
    if engine not in ("auto", "onnxruntime"):
        return None
    record, folder = read_record(model)
    if engine == "auto" and gpu_may_be_present():
        return None
    path = export_path(folder)
    # What torch would compute in here: the precision the run predicts in, resolved for this CPU.
    precision = resolve_cpu_precision(record.inference_precision)
    if choose_engine(engine, device="cpu", precision=precision, images=images, compiled=path.exists()) != "onnxruntime":
        return None
    if path.exists():
        try:
            return ExportedModel(path)
        except ModelFileError:  # damaged in the cache (files there are written whole): export it again
            path.unlink(missing_ok=True)
    say = log or (lambda message: print(message, file=sys.stderr))
    say(f"Exporting {folder} to ONNX once for fast prediction (kept in {path.parent}).")
    try:
        _export_in_child(folder, path)
    except GraftError as error:
        if engine != "auto":
            raise
        say(f"Warning: {error} Predicting in PyTorch instead.")
        return None
    return ExportedModel(path)


def export_after_training(folder: Path, classifier, *, graphs: Path, frozen_backbone: bool, may_trace: bool,
                          say=None) -> Path | None:
    """Write the kept export of a run just trained, in this process (torch is loaded already), where
    ONNX Runtime is the engine that would predict it on this CPU, as its backbone's graph plus the
    head: about a second once that graph is there. A run whose backbone kept its pretrained weights
    (`frozen_backbone`) finds the graph where the run's features were extracted (`graphs`) or in
    graft's own cache; a fine-tuned one gives its weights to its backbone's template there. Either is
    traced into graft's cache first where missing (about 10 s, once per backbone and size). A head
    of another kind is traced with the whole model, only where `may_trace` (it trained for minutes).
    The path, or None where nothing was written (a failed export is said through `say`, and the run
    stands as it is)."""
    import tempfile

    from ..engines.choice import AUTO_MIN_IMAGES
    from ..engines.compile import compile_onnx, compiled_path, with_weights
    from ..engines.forward import engines_folder
    from .onnx import backbone_graph, export_onnx, head_operators, parity_images

    precision = resolve_cpu_precision(classifier.precision)
    path = export_path(folder)
    if path.exists() or choose_engine("auto", device="cpu", precision=precision,
                                      images=AUTO_MIN_IMAGES[precision]) != "onnxruntime":
        return None
    shared = engines_folder()  # graft's own cache: one graph per backbone and size for every run
    backbone, size = classifier.model.backbone, classifier.data_config.input_size
    try:
        addable = head_operators(classifier.model.head) is not None
        graph = backbone_graph(classifier, folders=(graphs, shared)) if addable else None
        with tempfile.TemporaryDirectory(prefix="graft-export-") as work:
            if addable and graph is None:
                template = not frozen_backbone  # a fine-tuned backbone: its structure's graph, given its weights
                if say and (frozen_backbone or not compiled_path(backbone, size, shared, template=True).exists()):
                    say("Tracing the backbone to ONNX for fast prediction (once per backbone and size)...")
                graph = compile_onnx(backbone, size, shared, template=template)
                if template:
                    graph = with_weights(graph, backbone, size, Path(work) / "backbone.onnx")
            if not (may_trace or graph):
                return None
            # A cached backbone graph was checked against torch when it was traced: the whole is checked on
            # a few real images (a second on a 2-core CPU), a traced export on graft export's full set.
            images = parity_images(classifier)[0][:QUICK_PARITY_IMAGES] if graph else None
            export_onnx(classifier, path, graph=graph, check_images=images, log=None)
    except (GraftError, OSError) as error:  # CompileError is a GraftError
        if say:
            say(f"Note: the run was not exported for fast prediction ({error}); graft predict will try again.")
        return None
    return path


def _export_in_child(folder: Path, path: Path) -> None:
    """Export in a process of its own: torch and the tracer's memory go when it ends."""
    result = subprocess.run([sys.executable, "-m", "graft.export.cached", str(folder), str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise GraftError(f"The ONNX export of {folder} failed: {lines[-1] if lines else 'no message'}")


def _main(folder: str, out: str) -> None:
    from ..classifier import load
    from .onnx import export_onnx

    try:
        export_onnx(load(folder), out, log=None)
    except GraftError as error:
        print(error, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    _main(*sys.argv[1:3])
