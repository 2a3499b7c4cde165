"""The whole classifier as one ONNX file that another program can run with nothing else.

The graph takes uint8 RGB pixels, N x 3 x H x W, already resized and cropped as the metadata says
(the backbone's pretrained preprocessing), and normalises them itself; it returns `logits` and
`probabilities` (a softmax; a multi-label model's: each class's sigmoid) for N images (N is dynamic);
an export put together from its backbone's graph also returns `features` (the backbone's pooled
features, what a score of unknown images reads: graft.unknown) and `probabilities_and_features`
(the two side by side, one row per image: what graft itself runs, in one pass). The class names, input size, mean/std, interpolation
and crop travel in the ONNX file's metadata (each key's value as JSON) and in a JSON file beside it.
The parity check (graft.export.common) runs it in ONNX Runtime.

The export is its backbone's graph with the head's few operators added after it: the graph that
extracted a frozen run's features, found in the engines' cache, or the template of the backbone's
structure given the run's weights (graft.engines.compile); either is traced once per backbone and
size, so an export takes about a second where tracing the whole network takes seconds and most of a
gigabyte. Every prediction of a run on a CPU runs this same graph (graft.export.cached).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..engines import trace_onnx
from ..io import atomic_path, write_json_atomic
from ..unknown import UnknownScore
from .common import (
    FORMATS,
    OUTPUTS,
    Exportable,
    Exported,
    ExportError,
    Parity,
    check_parity,
    images_to_check,
    judge,
    metadata,
    parity_images,
    require_suffix,
    scores_module,
)
from .unknown_graph import SCORE_OUTPUT, add_unknown_score, with_scores

__all__ = ["FORMATS", "ExportError", "Exported", "Parity", "check_parity", "export_onnx", "metadata",
           "parity_images", "write_onnx"]


def write_onnx(classifier: Exportable, path: Path, *, graphs: Sequence[Path] = (), frozen_backbone: bool = False,
               unknown: UnknownScore | None = None, made: Path | None = None, say=None) -> bool:
    """The classifier (pixels in, logits and probabilities out, batch dynamic) as ONNX at `path`: its
    backbone's graph plus the head (prepared_backbone_graph), else, for a head of another kind,
    traced whole. `unknown`: a score of unknown images to compute in the graph too
    (graft.export.unknown_graph), which only a graph put together from its backbone's can hold.
    `made`: this classifier's graph written so already (graft.export.cached.unsaved_graph), copied
    as it is where no score is asked for. Returns whether the file computes that score."""
    if made is not None and unknown is None:
        shutil.copyfile(made, path)
        return False
    with tempfile.TemporaryDirectory(prefix="graft-export-") as work:
        graph = prepared_backbone_graph(classifier, Path(work), graphs=graphs, frozen_backbone=frozen_backbone,
                                        say=say)
        if graph is not None and _add_head(graph, classifier.model.head, path,
                                           multilabel=classifier.task == "multilabel", unknown=unknown):
            return unknown is not None
    if unknown is not None and say:
        say("The score of unknown images is not in this file: its head is not made of graft's layers, so the "
            "graph does not give the backbone's features apart.")
    model = scores_module(classifier)
    example = torch.zeros((2, *classifier.data_config.input_size), dtype=torch.uint8)
    trace_onnx(model, example, path, output_names=list(OUTPUTS))
    return False


def prepared_backbone_graph(classifier: Exportable, work: Path, *, graphs: Sequence[Path] = (),
                            frozen_backbone: bool = False, say=None) -> Path | None:
    """The graph of the classifier's backbone as it is now, for a head made of graft's layers (None
    for another head): the one in `graphs` or graft's engines cache (the graph that extracted a
    frozen run's features); else traced into that cache first, once per backbone and size: exactly
    for a `frozen_backbone`, else as its structure's template, given the weights in `work`."""
    from ..engines.compile import compile_onnx, compiled_path, with_weights
    from ..engines.forward import engines_folder

    if head_operators(classifier.model.head) is None:
        return None
    shared = engines_folder()
    graph = backbone_graph(classifier, folders=(*graphs, shared))
    if graph is not None:
        return graph
    backbone, size = classifier.model.backbone, classifier.data_config.input_size
    template = not frozen_backbone
    if say and (frozen_backbone or not compiled_path(backbone, size, shared, template=True).exists()):
        say("Tracing the backbone to ONNX (once per backbone and size)...")
    graph = compile_onnx(backbone, size, shared, template=template)
    return with_weights(graph, backbone, size, work / "backbone.onnx") if template else graph


def backbone_graph(classifier: Exportable, *, folders: Sequence[Path] = ()) -> Path | None:
    """The graph of the classifier's backbone, exactly as it is now, from the first of `folders`
    (default: the engines' cache, graft.engines.forward.engines_folder) that holds it; None if none."""
    from ..engines.compile import compiled_path
    from ..engines.forward import engines_folder

    name = compiled_path(classifier.model.backbone, classifier.data_config.input_size, Path()).name  # hashed once
    return next((folder / name for folder in (folders or [engines_folder()]) if (folder / name).exists()), None)


def head_operators(head: torch.nn.Module) -> list[torch.nn.Module] | None:
    """The head's layers that act at inference (Linear, ReLU: graft.heads.create_head's), in order;
    None for a head made of anything else, which is then traced with the backbone."""
    layers = list(head.children()) if isinstance(head, torch.nn.Sequential) else [head]
    if not all(isinstance(layer, (torch.nn.Linear, torch.nn.ReLU, torch.nn.Dropout, torch.nn.Identity))
               for layer in layers):
        return None
    acting: list[torch.nn.Module] = [layer for layer in layers if isinstance(layer, (torch.nn.Linear, torch.nn.ReLU))]
    return acting if acting and isinstance(acting[-1], torch.nn.Linear) else None


def _add_head(backbone: Path, head: torch.nn.Module, path: Path, *, multilabel: bool = False,
              unknown: UnknownScore | None = None) -> bool:
    """Write at `path` the backbone's graph (pixels -> pooled float features) followed by the head in
    eval mode (Gemm and Relu; Dropout is the identity) and a softmax (`multilabel`: a sigmoid per
    class): outputs `logits`, `probabilities`, `features` (the backbone's pooled features) and
    `probabilities_and_features` (probabilities then features, concatenated per image); with
    `unknown`, its score too (graft.export.unknown_graph). False (nothing written) where the head or
    the graph is of another kind."""
    import onnx
    from onnx import helper, numpy_helper

    operators = head_operators(head)
    model = onnx.load(str(backbone))
    graph = model.graph
    if not operators or len(graph.output) != 1 or graph.output[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        return False
    features = graph.output[0]
    batch = features.type.tensor_type.shape.dim[0]
    current = features.name
    for index, layer in enumerate(operators):
        output = "logits" if index == len(operators) - 1 else f"head.{index}"
        if isinstance(layer, torch.nn.Linear):
            weights = [numpy_helper.from_array(tensor.detach().float().cpu().numpy(), f"head.{index}.{name}")
                       for name, tensor in (("weight", layer.weight), ("bias", layer.bias)) if tensor is not None]
            graph.initializer.extend(weights)
            graph.node.append(helper.make_node("Gemm", [current, *(w.name for w in weights)], [output], transB=1,
                                               name=f"head.{index}"))
        else:
            graph.node.append(helper.make_node("Relu", [current], [output], name=f"head.{index}"))
        current = output
    if multilabel:
        graph.node.append(helper.make_node("Sigmoid", ["logits"], ["probabilities"], name="sigmoid"))
    else:
        graph.node.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1, name="softmax"))
    graph.node.append(helper.make_node("Identity", [features.name], ["features"], name="features"))
    graph.node.append(helper.make_node("Concat", ["probabilities", "features"], ["probabilities_and_features"],
                                       axis=1, name="probabilities_and_features"))
    linear = [layer for layer in operators if isinstance(layer, torch.nn.Linear)]
    classes, width = int(linear[-1].out_features), int(linear[0].in_features)
    rows = batch.dim_param or batch.dim_value
    del graph.output[:]
    graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [rows, classes]) for name in OUTPUTS)
    graph.output.extend([helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, [rows, width]),
                         helper.make_tensor_value_info("probabilities_and_features", onnx.TensorProto.FLOAT,
                                                       [rows, classes + width])])
    if unknown is not None:
        add_unknown_score(model, unknown, classes=classes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return True


def export_onnx(classifier: Exportable, out: str | Path, *, check_images: list[Path] | None = None,
                graphs: Sequence[Path] = (), frozen_backbone: bool = False, unknown: UnknownScore | None = None,
                made: Path | None = None, log=print) -> Exported:
    """Write `out` (e.g. model.onnx) and `out`.json; refuse an export that changes an answer.
    `graphs`, `frozen_backbone`: where its backbone's graph may be, and how to trace one (write_onnx);
    `made`: the classifier's graph made already, to take instead (write_onnx; its metadata replaced);
    `unknown`: a score of unknown images for the file to compute too (output `unknown_score`, the
    threshold in the metadata), checked against graft's own like the answers."""
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ExportError(f"ONNX export needs the onnx and onnxruntime packages ({error.name} is missing): "
                          "pip install onnx onnxruntime onnxscript") from None
    out = Path(out)
    require_suffix(out, ".onnx", "an ONNX")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as temporary:
        scored = write_onnx(classifier, temporary, graphs=graphs, frozen_backbone=frozen_backbone, unknown=unknown,
                            made=made, say=log)
        kept = unknown if scored else None
        info = metadata(classifier, "onnx", unknown=kept)
        graph = onnx.load(str(temporary))
        del graph.metadata_props[:]  # a graph `made` for the unsaved model carries that model's
        graph.metadata_props.extend(
            onnx.StringStringEntryProto(key=key, value=json.dumps(value)) for key, value in info.items())
        onnx.save(graph, str(temporary))
        session = onnxruntime.InferenceSession(str(temporary), providers=["CPUExecutionProvider"])
        outputs = ["logits", *([SCORE_OUTPUT] if kept is not None else [])]

        def run(pixels: np.ndarray) -> np.ndarray:
            found = session.run(outputs, {"pixels": pixels})
            return with_scores(found[0], found[1] if kept is not None else None)

        images, source = images_to_check(classifier, check_images)
        parity = check_parity(run, classifier, images, source=source, unknown=kept)
        judge(parity, "ONNX", "Update onnx/onnxruntime/torch, or report the model's backbone to graft.", log)
    metadata_path = out.with_name(out.name + ".json")
    write_json_atomic(metadata_path, {**info, "parity": asdict(parity)})
    return Exported(path=out, metadata_path=metadata_path, parity=parity)
