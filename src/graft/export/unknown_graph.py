"""A run's score of unknown images (graft.unknown) as operators inside its exported ONNX graph.

`add_unknown_score` appends to a graph that already gives `features` (the backbone's pooled
features), `logits` and `probabilities` (graft.export.onnx) the operators that compute the score
graft.unknown computes in numpy, with the arrays it needs as the graph's initializers, and two
outputs: `unknown_score` (one float per image: higher is less like the training images) and
`probabilities_and_unknown` (the probabilities then the score, one row per image: what graft's own
predictor of an exported file runs, in one pass). An image is unknown where `unknown_score` is above
the threshold the file's metadata gives ("unknown": {"threshold": ...}); the answer is untouched.

- "knn": 1 - the cosine similarity of the centred features to the k-th most similar training
  embedding (Sub, ReduceL2, Div, MatMul with the N x D training rows, then ReduceMax, or TopK and
  ReduceMin for k > 1). The training rows travel in the file: N x D floats (4 bytes each).
- "mahalanobis": the smallest (x - mean_c)' P (x - mean_c) over the classes, expanded as
  x'Px - 2 x'P mean_c + mean_c'P mean_c (float32 here, float64 in numpy). Keeps D x D and C x D.
- "max-probability": minus the largest softmax probability; "energy": minus logsumexp of the logits.

The graph computes in float32 what numpy computes in float64 for mahalanobis and partly for knn: the
export's parity check (graft.export.common) compares the two on real images and refuses a file whose
scores differ by more than `SCORE_TOLERANCE`, relative to the score's size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

    from ..unknown import UnknownScore

SCORE_OUTPUT = "unknown_score"
COMBINED_OUTPUT = "probabilities_and_unknown"
SCORE_TOLERANCE = 1e-3  # largest |graph - numpy| / max(1, |numpy|): float32 against float64, far above either's error
# An ONNX file is one protobuf message, at most 2 GB: the score's arrays may take half of it (knn:
# about 200,000 training images of 1,280 features); beyond, the file is written without the score.
MAX_SCORE_BYTES = 1 << 30


def score_bytes(unknown: UnknownScore) -> int:
    """The bytes the score's arrays take inside a graph (float32)."""
    return sum(array.size * 4 for array in unknown.arrays.values())


def add_unknown_score(model: onnx.ModelProto, unknown: UnknownScore, *, classes: int) -> None:
    """Append `unknown`'s score to `model` (whose graph gives `features`, `logits` and `probabilities`
    for a batch of `rows` images) as the outputs `unknown_score` (N) and `probabilities_and_unknown`
    (N x classes + 1). Raises ValueError for a score of a kind graft does not know."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    added: list[onnx.NodeProto] = []

    def constant(name: str, array: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), f"unknown.{name}"))
        return f"unknown.{name}"

    def node(op: str, inputs: list[str], name: str, **attributes) -> str:
        added.append(helper.make_node(op, inputs, [f"unknown.{name}"], name=f"unknown.{name}", **attributes))
        return f"unknown.{name}"

    rows_axis = constant("axis_rows", np.array([1], dtype=np.int64))
    if unknown.kind == "knn":
        arrays = unknown.tensors()
        centred = node("Sub", ["features", constant("mean", arrays["unknown.mean"])], "centred")
        length = node("Max", [node("ReduceL2", [centred, rows_axis], "length", keepdims=1),
                              constant("smallest", np.array(1e-12, dtype=np.float32))], "length_floor")
        similarity = node("MatMul", [node("Div", [centred, length], "unit"),
                                     constant("train_t", np.ascontiguousarray(arrays["unknown.train"].T))], "similarity")
        if unknown.k == 1:
            nearest = node("ReduceMax", [similarity, rows_axis], "nearest", keepdims=0)
        else:
            added.append(helper.make_node("TopK", [similarity, constant("k", np.array([unknown.k], dtype=np.int64))],
                                          ["unknown.top", "unknown.top_index"], axis=1, name="unknown.top"))
            nearest = node("ReduceMin", ["unknown.top", rows_axis], "nearest", keepdims=0)
        score = node("Sub", [constant("one", np.array(1.0, dtype=np.float32)), nearest], "score")
    elif unknown.kind == "mahalanobis":
        arrays = unknown.tensors()
        precision, means = arrays["unknown.precision"].astype(np.float64), arrays["unknown.class_means"].astype(np.float64)
        projected = node("MatMul", ["features", constant("precision", arrays["unknown.precision"])], "projected")
        own = node("ReduceSum", [node("Mul", [projected, "features"], "product"), rows_axis], "own", keepdims=1)
        cross = node("MatMul", [projected, constant("means_t_x2", (2 * means.T).astype(np.float32))], "cross")
        offsets = np.einsum("cd,cd->c", means @ precision, means).astype(np.float32)
        distances = node("Add", [node("Sub", [own, cross], "difference"), constant("offsets", offsets)], "distances")
        score = node("ReduceMin", [distances, rows_axis], "score_min", keepdims=0)
    elif unknown.kind == "max-probability":
        score = node("Neg", [node("ReduceMax", ["probabilities", rows_axis], "top", keepdims=0)], "score")
    elif unknown.kind == "energy":
        score = node("Neg", [node("ReduceLogSumExp", ["logits", rows_axis], "log_sum", keepdims=0)], "score")
    else:
        raise ValueError(f"no graph for the score of unknown images {unknown.kind!r}")
    added.append(helper.make_node("Identity", [score], [SCORE_OUTPUT], name=SCORE_OUTPUT))
    column = node("Unsqueeze", [SCORE_OUTPUT, rows_axis], "column")
    added.append(helper.make_node("Concat", ["probabilities", column], [COMBINED_OUTPUT], axis=1, name=COMBINED_OUTPUT))
    graph.node.extend(added)
    batch = graph.output[0].type.tensor_type.shape.dim[0]
    rows = batch.dim_param or batch.dim_value
    graph.output.extend([helper.make_tensor_value_info(SCORE_OUTPUT, onnx.TensorProto.FLOAT, [rows]),
                         helper.make_tensor_value_info(COMBINED_OUTPUT, onnx.TensorProto.FLOAT, [rows, classes + 1])])


def score_difference(graph_scores: np.ndarray, scores: np.ndarray) -> float:
    """The largest |graph - numpy| relative to the score's size (max(1, |numpy|)): what SCORE_TOLERANCE bounds."""
    graph_scores, scores = (np.asarray(values, dtype=np.float64).reshape(-1) for values in (graph_scores, scores))
    return float((np.abs(graph_scores - scores) / np.maximum(1.0, np.abs(scores))).max()) if scores.size else 0.0


def read_graph_score(info: dict, outputs: set[str], path) -> UnknownScore | None:
    """The score of unknown images a model file computes itself (`graft export` put it in the graph):
    the record in its metadata's "unknown", where the graph gives COMBINED_OUTPUT; None for a file
    without one. ModelFileError naming `path` for a damaged record."""
    if not isinstance(info.get("unknown"), dict) or COMBINED_OUTPUT not in outputs:
        return None
    from ..errors import GraftError, ModelFileError
    from ..unknown import UnknownScore

    try:
        return UnknownScore.from_dict(info["unknown"], in_graph=True)
    except GraftError as error:
        raise ModelFileError(f"{path}: {error}") from None


def split_scores(outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COMBINED_OUTPUT's rows as the probabilities and each image's score (float64)."""
    return np.ascontiguousarray(outputs[:, :-1]), outputs[:, -1].astype(np.float64)


def with_scores(logits: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
    """An export's logits, and its score of unknown images beside them where there is one (N x classes [+ 1]):
    what the parity check (graft.export.common.check_parity) reads."""
    logits = np.asarray(logits)
    return logits if scores is None else np.concatenate([logits, np.asarray(scores).reshape(-1, 1)], axis=1)
