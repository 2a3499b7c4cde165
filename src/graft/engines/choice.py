"""Which engine runs a frozen forward pass: decided without importing torch, so that `graft predict`
can choose ONNX Runtime before paying for torch at all (graft.export.cached).

`--engine auto` (the default) decides per pass:
- on a GPU: torch (its kernels are fast there; the graphs here run on the CPU);
- on a CPU: ONNX Runtime when the graph is already compiled (on disk, by content), or when the pass
  is long enough to repay compiling it (about 7-10 s for Lite0): from 500 images where torch would
  run fp32 (2.4x faster extraction saves 0.0085 s an image, and the graph then serves the run's
  later passes too), from 5,000 where torch runs native bf16 (1.34x with AVX-512 bf16: 0.002 s an
  image; 1.5-1.7x with AMX, whose bf16 matrix units torch uses: 0.004 s); else torch.
Explicit `torch`, `onnxruntime` or `openvino` is always followed (an error when it is not installed).
The measurements are in graft.engines.forward and docs/benchmarks.md, "Engines".
"""

from __future__ import annotations

from importlib.util import find_spec

from ..errors import GraftError
from ..runtime import ENGINES

AUTO_MIN_IMAGES = {"32": 500, "bf16": 5000}  # by the precision torch would run in; see the module's text
PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


def installed(engine: str) -> bool:
    return engine == "torch" or find_spec(PACKAGES[engine]) is not None


def choose_engine(requested: str, *, device: str, precision: str, images: int, compiled: bool = False) -> str:
    """The engine a forward pass over `images` images runs in.

    `device`: where torch would run it ("cpu", "cuda"); `precision`: what torch would compute in
    ("32" or "bf16"); `compiled`: the pass's graph is on disk already.
    """
    if requested not in ENGINES:
        raise GraftError(f"--engine {requested!r}: choose one of {', '.join(ENGINES)}.")
    if requested != "auto":
        if not installed(requested):
            raise GraftError(f"--engine {requested}: the {PACKAGES[requested]} package is not installed "
                             f"(pip install {PACKAGES[requested]}), or use --engine auto.")
        return requested
    if device != "cpu":
        return "torch"
    if not installed("onnxruntime"):
        return "torch"
    return "onnxruntime" if compiled or images >= AUTO_MIN_IMAGES[precision] else "torch"
