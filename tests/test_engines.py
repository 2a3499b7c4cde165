"""Inference engines for frozen forward passes: the same answers as PyTorch, never mixed in the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import graft
from graft.backbones import create_backbone
from graft.data.discover import find_data
from graft.engines import CompileError, choose_engine, frozen_forward, installed
from graft.errors import GraftError
from graft.features import FeatureCache
from graft.features.extract import backbone_features
from graft.runtime import Runtime
from test_cli import run_main

FP32 = Runtime(precision="32", progress=False)


@pytest.fixture(scope="module")
def lite0():
    return create_backbone("tf_efficientnet_lite0", weights="imagenet", img_size=32)


@pytest.fixture(scope="module")
def engines(tmp_path_factory) -> Path:
    """One folder of compiled graphs for the module: each network is traced once (seconds). It is the
    folder a feature cache in its parent's features/ uses."""
    return tmp_path_factory.mktemp("engine-cache") / "engines"


def test_onnxruntime_features_equal_torchs_and_are_cached_apart(lite0, tiny_dataset, tmp_path, engines):
    samples = find_data(tiny_dataset).train
    cache = FeatureCache(engines.parent / "features")
    from_torch = backbone_features(lite0, samples, split="train", runtime=FP32.but(engine="torch"), cache=cache)
    from_ort = backbone_features(lite0, samples, split="train", runtime=FP32.but(engine="onnxruntime"), cache=cache)
    # the cache stores float16: the engines may differ by one float16 step (1e-3 relative), no more
    assert np.allclose(np.asarray(from_ort.features, dtype=np.float32), np.asarray(from_torch.features, dtype=np.float32),
                       rtol=1e-3, atol=1e-4)
    entries = cache.entries()
    assert len(entries) == 2  # one per engine: features of one are never read as the other's
    assert (from_ort.meta["engine"], from_torch.meta["engine"]) == ("onnxruntime", "torch")
    assert from_ort.meta["precision"] == from_torch.meta["precision"] == "32"
    assert sorted(e.description for e in entries) == ["tf_efficientnet_lite0 train view plain (onnxruntime)",
                                                       "tf_efficientnet_lite0 train view plain (torch)"]
    graphs = list((cache.root.parent / "engines").glob("*.onnx"))
    again = backbone_features(lite0, samples, split="train", runtime=FP32.but(engine="onnxruntime"), cache=cache)
    assert np.array_equal(np.asarray(again.features), np.asarray(from_ort.features))
    assert list((cache.root.parent / "engines").glob("*.onnx")) == graphs  # read from the cache: nothing traced


def test_under_auto_the_engine_follows_the_machine_not_what_the_cache_holds(lite0, tiny_dataset, tmp_path, monkeypatch):
    """Issue 24: a run's features came from torch bf16 in a fresh cache and from ONNX Runtime once a
    graph was traced. Now auto on a CPU extracts in ONNX Runtime fp32 however few the images and
    whatever the cache holds; features torch cached for the same images are never taken instead."""
    samples = find_data(tiny_dataset).train
    cache = FeatureCache(tmp_path / "features")
    from_torch = backbone_features(lite0, samples, split="train", runtime=FP32.but(engine="torch"), cache=cache)
    auto = backbone_features(lite0, samples, split="train", runtime=FP32, cache=cache)  # 36 images, torch's cached
    assert (auto.meta["engine"], auto.meta["precision"]) == ("onnxruntime", "32") and auto.path != from_torch.path
    bf16 = backbone_features(lite0, samples[:4], split="train", runtime=FP32.but(inference_precision="bf16"), cache=cache)
    assert (bf16.meta["engine"], bf16.meta["precision"]) == ("torch", "bf16")  # asked for: torch computes it
    monkeypatch.setattr("graft.engines.choice.find_spec", lambda name: None)  # no ONNX Runtime installed
    assert backbone_features(lite0, samples, split="train", runtime=FP32, cache=cache).path == from_torch.path


def test_a_batch_longer_than_a_slice_answers_in_order_in_every_engine(lite0, engines, monkeypatch):
    """CPU passes run in slices (graft.runtime.PIXELS_PER_RUN): 7 images in slices of 2 answer, in
    order, as the module does for each image alone."""
    import graft.runtime

    monkeypatch.setattr(graft.runtime, "PIXELS_PER_RUN", 2 * 32 * 32)
    pixels = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    lite0.eval()
    with torch.inference_mode():
        alone = torch.cat([lite0(pixels[i:i + 1]) for i in range(len(pixels))])
    calls = []
    forward_of_module = lite0.forward
    monkeypatch.setattr(lite0, "forward", lambda batch: calls.append(len(batch)) or forward_of_module(batch))
    for engine in ("torch", "onnxruntime"):
        calls.clear()
        with frozen_forward(lite0, runtime=FP32.but(engine=engine), input_size=(3, 32, 32), folder=engines) as forward:
            calls.clear()  # tracing calls the module too
            outputs = forward(pixels)
        assert outputs.shape == alone.shape
        assert torch.allclose(outputs, alone, rtol=1e-4, atol=1e-4), engine
        if engine == "torch":
            assert calls == [2, 2, 2, 1]


def test_onnxruntime_runs_the_slices_side_by_side_with_the_same_answers(lite0, engines, monkeypatch):
    """graft.engines.sliced: with two cores, two slices run at once, one thread each, and every
    image gets the same numbers, bit for bit, as in one run of the whole batch and as alone."""
    import threading

    import graft.runtime
    from graft.engines.compile import compile_onnx
    from graft.engines.sliced import SlicedSession

    session = SlicedSession(compile_onnx(lite0, (3, 32, 32), engines), threads=2)
    pixels = np.random.default_rng(3).integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
    whole = session(pixels)  # one slice (8 images of 32 px): one run with both threads
    alone = np.concatenate([session(pixels[i:i + 1]) for i in range(len(pixels))])
    monkeypatch.setattr(graft.runtime, "PIXELS_PER_RUN", 2 * 32 * 32)  # now 4 slices of 2
    together = threading.Barrier(2, timeout=30)
    run_one = session.session.run

    def run_beside_another(*args):
        together.wait()  # passes only while another slice is running too
        return run_one(*args)

    monkeypatch.setattr(session.session, "run", run_beside_another)
    sliced = session(pixels)
    assert together.n_waiting == 0 and not together.broken
    assert np.array_equal(sliced, whole) and np.array_equal(alone, whole)


@pytest.mark.slow
@pytest.mark.skipif(not installed("openvino"), reason="openvino is not installed (pip install 'graft[openvino]')")
def test_openvino_answers_like_torch(lite0, engines):
    pixels = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    outputs = {}
    for engine in ("torch", "openvino"):
        with frozen_forward(lite0, runtime=FP32.but(engine=engine), input_size=(3, 32, 32), folder=engines) as forward:
            outputs[engine] = forward(pixels)
            assert forward.engine == engine
    assert torch.allclose(outputs["openvino"], outputs["torch"], atol=1e-4)


def test_predict_and_evaluate_give_the_same_answers_in_every_engine(linear_probe_run, tiny_dataset, monkeypatch,
                                                                    engines):
    monkeypatch.setattr("graft.engines.forward.engines_folder", lambda: engines)
    classifier = linear_probe_run.classifier
    monkeypatch.setattr(classifier, "runtime", FP32)  # torch in fp32 too, whatever this CPU has
    images = sorted((Path(tiny_dataset) / "val").rglob("*.png"))
    answers = {engine: classifier.predict(images, top_k=3, engine=engine, tta=True) for engine in ("torch", "onnxruntime")}
    for a, b in zip(answers["torch"], answers["onnxruntime"]):
        assert a.label == b.label and a.probability == pytest.approx(b.probability, abs=1e-4)
    assert classifier.evaluate(Path(tiny_dataset) / "val", engine="onnxruntime").accuracy == \
        classifier.evaluate(Path(tiny_dataset) / "val", engine="torch").accuracy
    assert not classifier.model.training  # the model is left as it was


def test_auto_picks_by_the_machine_and_the_options_alone():
    assert choose_engine("auto", device="cpu", precision="32") == "onnxruntime"  # however few the images
    assert choose_engine("auto", device="cpu", precision="bf16") == "torch"  # --precision bf16: torch computes it
    assert choose_engine("auto", device="cuda", precision="32") == "torch"
    assert choose_engine("torch", device="cpu", precision="32") == "torch"  # an explicit choice is followed
    assert choose_engine("onnxruntime", device="cuda", precision="32") == "onnxruntime"


def test_a_missing_or_unknown_engine_is_a_clear_error(monkeypatch):
    with pytest.raises(GraftError, match=r"--engine 'tensorrt': choose one of auto, torch, onnxruntime, openvino"):
        choose_engine("tensorrt", device="cpu", precision="32")
    monkeypatch.setattr("graft.engines.choice.find_spec", lambda name: None)
    with pytest.raises(GraftError, match=r"--engine openvino: the openvino package is not installed \(pip install openvino\)"):
        choose_engine("openvino", device="cpu", precision="32")
    assert choose_engine("auto", device="cpu", precision="32") == "torch"  # auto does without


def test_inference_is_fp32_unless_bf16_is_asked_for():
    """Decision 1 of issue 23: bf16-mixed is for training only; a frozen pass computes in bf16 only
    where --precision bf16 was asked, and then in torch."""
    from graft.runtime import resolve_inference_precision

    assert resolve_inference_precision("auto") == resolve_inference_precision("32") == "32"
    assert resolve_inference_precision("bf16") == "bf16"
    assert resolve_inference_precision("bf16", engine="onnxruntime") == "32"  # what that engine computes in
    runtime = Runtime.resolve(precision="auto", progress=False)
    assert runtime.inference_precision == "32" and runtime.precision in ("32", "bf16")  # training: the machine's


def test_a_damaged_graph_on_disk_is_traced_again(tmp_path):
    net = create_backbone("resnet10t", weights="none", img_size=32)
    pixels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with frozen_forward(net, runtime=FP32.but(engine="onnxruntime"), input_size=(3, 32, 32), folder=tmp_path) as forward:
        first = forward(pixels)
    (graph,) = tmp_path.glob("*.onnx")
    graph.write_bytes(b"not an onnx graph")
    with frozen_forward(net, runtime=FP32.but(engine="onnxruntime"), input_size=(3, 32, 32), folder=tmp_path) as forward:
        assert torch.equal(forward(pixels), first)
    assert graph.stat().st_size > 1000


def test_a_template_takes_any_weights_of_its_structure_and_refuses_another(tmp_path):
    """A template (traced once, weights as named initializers) given another net's weights answers as
    that net; a net of another structure is refused, and so is a graph whose weights went astray."""
    from graft.engines.compile import compile_onnx, compiled_path, with_weights

    size = (3, 32, 32)
    net = create_backbone("resnet10t", weights="none", img_size=32).eval()
    template = compile_onnx(net, size, tmp_path, template=True)
    tuned = create_backbone("resnet10t", weights="none", img_size=32).eval()
    with torch.no_grad():  # as fine-tuning leaves it: other weights and other BatchNorm statistics
        for tensor in tuned.state_dict().values():
            if tensor.is_floating_point():
                tensor.mul_(1.5).add_(0.01)
    assert compiled_path(tuned, size, tmp_path, template=True) == template  # one template per structure
    graph = with_weights(template, tuned, size, tmp_path / "tuned.onnx")
    pixels = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    import onnxruntime

    answer = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(None, {"pixels": pixels.numpy()})[0]
    with torch.inference_mode():
        reference = tuned(pixels).numpy()
    assert np.abs(answer - reference).max() <= 1e-3 * max(1.0, np.abs(reference).max())
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3))
    with pytest.raises(CompileError, match="names none of"):
        with_weights(template, other, size, tmp_path / "other.onnx")
    import onnx

    damaged = onnx.load(str(template))
    first = damaged.graph.initializer[0]
    for node in damaged.graph.node:  # renamed: the template's own weight stays where the run's should go
        node.input[:] = ["renamed" if name == first.name else name for name in node.input]
    first.name = "renamed"
    onnx.save(damaged, str(tmp_path / "damaged.onnx"))
    with pytest.raises(CompileError, match="differs from PyTorch"):
        with_weights(tmp_path / "damaged.onnx", tuned, size, tmp_path / "astray.onnx")
    assert not (tmp_path / "astray.onnx").exists() and not list(tmp_path.glob(".*.tmp*"))  # nothing half-written


def test_a_network_that_cannot_be_traced_falls_back_to_torch_under_auto_only(tmp_path, monkeypatch):
    traced: list[int] = []

    def untraceable(*args, **kwargs):
        traced.append(1)
        raise RuntimeError("\x1b[96mThis is step 1/3\x1b[0m of exporting. data-dependent control flow\nmore lines")

    monkeypatch.setattr("graft.engines.compile.trace_onnx", untraceable)
    net = create_backbone("resnet10t", weights="none", img_size=32)
    warnings: list[str] = []
    with frozen_forward(net, runtime=FP32, input_size=(3, 32, 32), folder=tmp_path, log=warnings.append) as forward:
        assert (forward.engine, forward.precision) == ("torch", "32")
    # one plain line: the exporter's first sentence, without its terminal colours
    assert "could not be traced to ONNX: This is step 1/3 of exporting." in warnings[0] and "\x1b" not in warnings[0]
    assert "PyTorch (fp32) instead" in warnings[0]
    with pytest.raises(CompileError, match="could not be traced"):
        with frozen_forward(net, runtime=FP32.but(engine="onnxruntime"), input_size=(3, 32, 32), folder=tmp_path):
            pass
    # The failure is remembered for this very network: the tracer (seconds each time) ran once; nothing
    # half-written is left, only that note.
    assert len(traced) == 1
    assert [path.name.endswith(".refused.json") for path in tmp_path.iterdir()] == [True]


def test_cli_predict_takes_an_engine(linear_probe_run, tiny_dataset, capsys, monkeypatch, fresh_cache):
    monkeypatch.setenv("GRAFT_CACHE", str(fresh_cache))  # no export of the run yet; Lite0's graph not traced again
    image = next((Path(tiny_dataset) / "val" / "red").glob("*.png"))
    code, output = run_main(["predict", linear_probe_run.run_dir, image, "--engine", "onnxruntime"], capsys, monkeypatch)
    assert code == 0 and "red" in output
    code, output = run_main(["predict", linear_probe_run.run_dir, image, "--engine", "tpu"], capsys, monkeypatch)
    assert code == 2 and "--engine 'tpu'" in output and "Traceback" not in output


@pytest.mark.slow
def test_every_engine_gives_the_same_val_answers_and_the_record_names_it(tiny_dataset, tmp_path):
    """issue 24: the engine that made a run's features is recorded, and changes no answer."""
    from conftest import FAST

    engines = ["torch", "onnxruntime"] + (["openvino"] if installed("openvino") else [])
    runs = {engine: graft.train(tiny_dataset, strategy="linear-probe", out=tmp_path, name=engine, engine=engine,
                                **FAST) for engine in engines}
    for engine, run in runs.items():
        assert run.record.engine == engine and run.record.inference_precision == "32"
        assert run.metrics.evaluations == runs["torch"].metrics.evaluations  # every val answer, per class
    saved = json.loads((runs["onnxruntime"].run_dir / "graft.json").read_text())
    assert saved["engine"] == "onnxruntime" and saved["config"]["runtime"]["engine"] == "onnxruntime"


@pytest.mark.slow
def test_the_same_run_gives_the_same_model_whatever_the_cache_holds(tiny_dataset, tmp_path, tiny_backbone):
    """issue 24: the same linear-probe command gave 94.1% val in a fresh cache and 96.1% in one where the
    backbone's graph had been traced (the engine followed the cache: bf16 torch features in one, ONNX
    Runtime's in the other). Now the engine follows the options and the machine alone: a cold cache and
    one that another run filled (torch's features of the same images, the graph traced) give the same
    head, bit for bit. On the tiny test_efficientnet (conftest's tiny_backbone): the cold cache traces
    its graph in a second, where Lite0's took tens."""
    import shutil

    from conftest import FAST as LITE0

    FAST = {**LITE0, **tiny_backbone}

    cold = graft.train(tiny_dataset, strategy="linear-probe", out=tmp_path, name="cold", cache_dir=tmp_path / "cold",
                       **FAST)
    warm = tmp_path / "warm"
    graft.train(tiny_dataset, strategy="linear-probe", out=tmp_path, name="other", engine="torch", cache_dir=warm, **FAST)
    shutil.copytree(tmp_path / "cold" / "engines", warm / "engines", dirs_exist_ok=True)  # the graph, traced
    again = graft.train(tiny_dataset, strategy="linear-probe", out=tmp_path, name="warm", cache_dir=warm, **FAST)
    assert cold.record.engine == again.record.engine
    mine, theirs = cold.classifier.model.head.state_dict(), again.classifier.model.head.state_dict()
    assert all(torch.equal(mine[name], theirs[name]) for name in mine)
    assert cold.metrics.evaluations == again.metrics.evaluations


def test_a_graph_that_could_not_be_written_is_not_remembered_as_untraceable(tmp_path, monkeypatch):
    """A full disk or a file-size limit while tracing is no fault of the network: the next pass traces again."""
    import errno

    calls: list[int] = []

    def full_disk(*args, **kwargs):
        calls.append(1)
        try:
            raise OSError(errno.EFBIG, "File too large")
        except OSError as error:
            raise RuntimeError("the exporter wraps it") from error

    monkeypatch.setattr("graft.engines.compile.trace_onnx", full_disk)
    net = create_backbone("resnet10t", weights="none", img_size=32)
    for _ in range(2):  # the system's own error, which graft's CLI says with the file and what to do
        with pytest.raises(OSError, match="File too large"):
            with frozen_forward(net, runtime=FP32.but(engine="onnxruntime"), input_size=(3, 32, 32), folder=tmp_path):
                pass
    assert len(calls) == 2 and not list(tmp_path.glob("*.refused.json"))
