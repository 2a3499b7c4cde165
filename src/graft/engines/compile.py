"""A PyTorch module as an ONNX graph that inference engines run: traced once, kept on disk by content.

The graph takes uint8 RGB pixels (N x 3 x H x W, N dynamic) and returns the module's one output
(features for a backbone, logits for a classifier): graft's networks normalise raw pixels
themselves, so the graph holds the preprocessing too. Tracing Lite0 takes about 7 s, so the file
is kept under a key computed from everything that changes the graph (the architecture, every
weight and buffer, the input size, the torch and onnx versions) and traced again only when one of
them changes. Before a new file is kept, it must give the module's outputs on sample pixels.

A *template* is kept by structure instead (the architecture and its tensors' names and shapes, not
their values): traced without the exporter's optimisations, its weights stay initializers named as
in the module's state dict, so `with_weights` gives any module of that structure (a fine-tuned
backbone) its graph in about a second, where tracing takes seconds and most of a gigabyte.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from ..errors import GraftError
from ..io import atomic_path, process_folder, write_json_atomic

FORMAT = 1  # bump when the way graphs are traced changes: older files are then traced again
TOLERANCE = 1e-3  # largest output difference, relative to the largest output, a compiled graph may show


class CompileError(GraftError):
    """A module could not be turned into a graph that answers like it."""


def trace_onnx(module: torch.nn.Module, example: torch.Tensor, path: str | Path, *,
               output_names: list[str], optimize: bool = True) -> None:
    """Write `module` as ONNX to `path`, input "pixels" with a dynamic batch dimension. `optimize`
    False keeps every weight and buffer an initializer under its state-dict name (no BatchNorm folded)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    # The exporter narrates its steps on stdout: keep them out of graft's own output.
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(module, (example,), str(path), input_names=["pixels"], output_names=output_names,
                          dynamic_shapes=({0: batch},), dynamo=True, external_data=False, verbose=False,
                          optimize=optimize)


def content_key(module: torch.nn.Module, input_size: tuple[int, ...]) -> str:
    """A hash of what decides the graph's answers: architecture, weights and buffers, input size, versions.

    Hashing every tensor is cheap next to the 7-8 s tracing Lite0 takes (docs/benchmarks.md, "Engines").
    """
    import onnx

    digest = hashlib.sha256()
    digest.update(json.dumps([FORMAT, list(input_size), torch.__version__, onnx.__version__, repr(module)]).encode())
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(np.ascontiguousarray(tensor.detach().cpu().float().numpy()).tobytes())
    return digest.hexdigest()[:32]


def structure_key(module: torch.nn.Module, input_size: tuple[int, ...]) -> str:
    """A hash of what shapes a template's graph: the architecture, its tensors' names, shapes and
    dtypes, the preprocessing the module does itself (its data config), the input size, versions."""
    import onnx

    tensors = [[name, list(tensor.shape), str(tensor.dtype)] for name, tensor in module.state_dict().items()]
    described = [FORMAT, "template", list(input_size), torch.__version__, onnx.__version__, repr(module),
                 repr(getattr(module, "data_config", None)), tensors]
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:32]


def compiled_path(module: torch.nn.Module, input_size: tuple[int, ...], folder: Path, *, template: bool = False) -> Path:
    if template:
        return folder / f"template-{structure_key(module, input_size)}.onnx"
    return folder / f"{content_key(module, input_size)}.onnx"


def compile_onnx(module: torch.nn.Module, input_size: tuple[int, ...], folder: Path, *, template: bool = False) -> Path:
    """The ONNX file for `module` in `folder`, traced and checked now if it is not there yet; with
    `template`, the template for its structure (see the module's text; give it weights with `with_weights`).

    A folder that cannot be written gets a temporary one instead (the graph then lives as long as
    this process). Raises CompileError when tracing fails or the graph answers differently.
    """
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise CompileError("Running a model in ONNX Runtime or OpenVINO needs the onnx package: "
                           "pip install onnx onnxscript") from None
    path = compiled_path(module, input_size, folder, template=template)
    if path.exists():
        return path
    refused = path.with_suffix(".refused.json")  # the tracer failed on this very module before: it would again
    if refused.exists():
        raise CompileError(_read_refusal(refused, module))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = process_folder("graft-engines-")
        path = folder / path.name
    example = _example(input_size)
    with _evaluating(module), atomic_path(path) as temporary:
        try:
            trace_onnx(module, example, temporary, output_names=["outputs"], optimize=not template)
        except Exception as error:  # the exporter raises many kinds; the message says which
            written_wrong = _os_error_in(error)
            if written_wrong is not None:  # a full disk, a size limit: the file's fault, not the module's
                raise written_wrong from None  # said as such (graft.cli), and not remembered
            message = f"{type(module).__name__} could not be traced to ONNX: {_first_sentence(error)}"
            try:  # remembered by content and versions, so the next pass does not spend seconds failing again
                write_json_atomic(refused, {"message": message, "torch": torch.__version__})
            except OSError:
                pass
            raise CompileError(message) from None
        difference = _checked(module, temporary, example)
    write_json_atomic(path.with_suffix(".json"), {"input_size": list(input_size), "relative_difference": difference,
                                                  "module": type(module).__name__, "torch": torch.__version__})
    return path


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError (a file not written) somewhere in the exception's chain: the exporter wraps them."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _first_sentence(error: Exception) -> str:
    """The exporter's first line, without terminal colour codes, at most 200 characters."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    first = (text.splitlines() or [type(error).__name__])[0]
    return first.split(". ")[0].rstrip(".")[:200] + "."


def _read_refusal(path: Path, module: torch.nn.Module) -> str:
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["message"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"{type(module).__name__} could not be traced to ONNX before."


def with_weights(template: Path, module: torch.nn.Module, input_size: tuple[int, ...], path: Path) -> Path:
    """Write at `path` the template's graph with `module`'s weights and buffers in place of those it
    was traced with (matched by state-dict name), then optimised as the exporter optimises (BatchNorm
    folded into the convolutions): as fast as a graph traced from `module`, and checked like one
    (compile_onnx). Returns `path`; raises CompileError where the graph does not answer as `module`."""
    import onnx
    import onnxscript.optimizer
    from onnx import helper, numpy_helper

    model = onnx.load(str(template))
    state = module.state_dict()
    replaced = 0
    for initializer in model.graph.initializer:
        tensor = state.get(initializer.name)
        if tensor is not None:
            tensor = tensor.detach().cpu()
            values = (tensor.float() if tensor.is_floating_point() else tensor).numpy()
            values = values.astype(helper.tensor_dtype_to_np_dtype(initializer.data_type), copy=False)
            if list(values.shape) != list(initializer.dims):
                raise CompileError(f"{template.name} does not fit {type(module).__name__}: {initializer.name} is "
                                   f"{list(initializer.dims)} there, {list(values.shape)} here.")
            initializer.CopyFrom(numpy_helper.from_array(values, initializer.name))
            replaced += 1
    if not replaced:
        raise CompileError(f"{template.name} names none of {type(module).__name__}'s weights: it is not its template.")
    with _evaluating(module), atomic_path(path) as temporary:
        try:
            onnx.save(onnxscript.optimizer.optimize(model), str(temporary))
        except Exception as error:  # the optimiser raises many kinds; the message says which
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise CompileError(f"The graph of {type(module).__name__} could not be optimised: {first[:300]}") from None
        _checked(module, temporary, _example(input_size))  # a weight left out would show here
    return path


def _example(input_size: tuple[int, ...]) -> torch.Tensor:
    """The two images of random pixels a new graph is checked on (the same every time)."""
    return torch.randint(0, 256, (2, *input_size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@contextlib.contextmanager
def _evaluating(module: torch.nn.Module):
    """`module` in eval mode (how it is traced and checked), as it was afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def _checked(module: torch.nn.Module, path: Path, example: torch.Tensor) -> float:
    """The graph at `path`'s relative difference from `module` on `example`; CompileError past TOLERANCE."""
    difference = _difference(module, path, example)
    if not difference <= TOLERANCE:  # also refuses NaN
        raise CompileError(f"The ONNX graph of {type(module).__name__} differs from PyTorch by {difference:.2e} "
                           f"(relative; at most {TOLERANCE:g} allowed): it was not kept.")
    return difference


def _difference(module: torch.nn.Module, path: Path, example: torch.Tensor) -> float:
    """Largest |graph - module| output on `example`, relative to the module's largest |output|."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph = session.run(None, {"pixels": example.numpy()})[0]
    with torch.inference_mode():
        reference = module(example).float().numpy()
    return float(np.abs(graph - reference).max() / max(1.0, float(np.abs(reference).max())))
