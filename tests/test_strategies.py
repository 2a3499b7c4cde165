"""Every strategy trains for real on tiny images, and trains exactly the parameters it should."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import graft
import graft.classifier
import graft.model
from conftest import FAST as FAST_RUN
from graft.backbones import create_backbone
from graft.heads.logistic import LOGREG_GRID
from graft.strategies import STRATEGIES

# conftest's FAST run (no report or audit: tests/test_report.py and test_audit.py check those), with
# enough epochs and views for every strategy to learn the colours.
FAST = {**FAST_RUN, "epochs": 2, "head_epochs": 8, "batch_size": 8, "views": 2}


@pytest.fixture(scope="module")
def pretrained_state():
    return {k: v.clone() for k, v in create_backbone("tf_efficientnet_lite0", img_size=32).body.state_dict().items()}


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):
    """Train each strategy once; the tests below inspect the results (the run folders and records)."""
    out = tmp_path_factory.mktemp("runs")
    return {name: graft.train(tiny_dataset, strategy=name, out=out, name=name, unfreeze=1, **FAST) for name in STRATEGIES}


def _learning_rates(result) -> list[float]:
    """The image phase's learning rate per parameter group at its first epoch, as the run logged them
    (Lightning's LearningRateMonitor: lr-AdamW, or lr-AdamW/pg1, pg2 ... for several groups)."""
    import csv

    with open(result.run_dir / "logs" / "images" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = sorted(name for name in rows[0] if name.startswith("lr-"))
    first = next(row for row in rows if row[columns[0]])
    return [float(first[name]) for name in columns]


def _changed(state, reference, prefix="backbone.body."):
    return {k.removeprefix(prefix) for k, v in state.items()
            if k.startswith(prefix) and not torch.equal(v, reference[k.removeprefix(prefix)])}


@pytest.mark.slow
def test_every_strategy_learns_the_colours(runs):
    results = runs
    accuracy = {name: result.metrics.val_accuracy for name, result in results.items()}
    for name, result in results.items():
        assert (result.run_dir / "model.safetensors").exists() and (result.run_dir / "graft.json").exists()
        if name != "scratch":
            assert accuracy[name] >= 0.9, accuracy
    # The course's finding: with the same epochs, random weights trail every pretrained strategy.
    assert accuracy["scratch"] < min(v for k, v in accuracy.items() if k != "scratch"), accuracy


@pytest.mark.slow
@pytest.mark.parametrize("name", ["linear-probe", "feature-extract", "truncate"])
def test_frozen_strategies_leave_the_backbone_and_its_batchnorm_untouched(runs, pretrained_state, name):
    result = runs[name]
    state = result.classifier.model.state_dict()
    if name == "truncate":  # FeatureListNet renames modules: compare through the tensors' values
        reference = sorted(v.sum().item() for k, v in pretrained_state.items() if "running_mean" in k)
        kept = sorted(v.sum().item() for k, v in state.items() if k.startswith("backbone.") and "running_mean" in k)
        assert set(kept) <= set(reference)
    else:
        assert not _changed(state, pretrained_state)  # weights AND BatchNorm running statistics


@pytest.mark.slow
def test_linear_probe_uses_logistic_regression_and_no_epochs(runs):
    result = runs["linear-probe"]
    assert result.history == [] and not (result.run_dir / "logs").exists()  # no fit, so no training logs
    assert result.classifier.record.strategy == "linear-probe" and result.metrics.logreg_c in LOGREG_GRID


@pytest.mark.slow
def test_feature_extract_trains_the_head_on_cached_views(runs):
    result = runs["feature-extract"]
    assert {row.phase for row in result.history} == {"head"}
    assert 1 <= len(result.history) <= FAST["head_epochs"]


@pytest.mark.slow
def test_finetune_trains_head_then_whole_base_at_a_smaller_rate(runs):
    result = runs["finetune"]
    phases = [row.phase for row in result.history]
    assert phases == sorted(phases) and set(phases) == {"head", "images"}  # every head epoch first
    head_lr, base_lr = _learning_rates(result)
    assert head_lr == pytest.approx(1e-3) and base_lr == pytest.approx(head_lr * 0.1)
    params = result.metrics.params
    assert params.trained == params.total  # the head and every backbone parameter


@pytest.mark.slow
def test_partial_trains_only_the_last_stage(runs):
    result = runs["partial"]  # --unfreeze 1
    model = result.classifier.model
    named = STRATEGIES["partial"].trainable(model.backbone, result.record.config.strategy)
    stages = [k.removeprefix("body.") for k in named]
    assert stages and all(k.startswith(("blocks.5", "blocks.6", "conv_head", "bn2")) for k in stages), sorted(stages)[:5]
    assert any(k.startswith("blocks.6") for k in stages) and any(k.startswith("conv_head") for k in stages)
    sizes = dict(model.backbone.named_parameters())
    head = model.param_counts(model.head).total
    assert result.metrics.params.trained == head + sum(sizes[k].numel() for k in named) < result.metrics.params.total
    assert len(_learning_rates(result)) == 2


@pytest.mark.slow
def test_truncate_cuts_the_backbone(runs):
    model = runs["truncate"].classifier.model
    assert model.backbone.cut == 3 and model.backbone.num_features == 112
    assert model.head[-1].in_features == 112


@pytest.mark.slow
def test_scratch_starts_from_random_weights_and_trains_everything(runs, pretrained_state):
    result = runs["scratch"]
    assert result.classifier.record.weights == "random initialisation"
    assert {row.phase for row in result.history} == {"images"}
    head_lr, base_lr = _learning_rates(result)
    assert head_lr == base_lr  # random weights need the full rate


@pytest.mark.slow
def test_saved_model_predicts_like_the_trained_one(runs, tiny_dataset):
    result = runs["finetune"]
    images = sorted((tiny_dataset / "val").rglob("*.png"))[:6]
    loaded = graft.load(result.run_dir)
    assert loaded.classes == ["blue", "green", "red"]
    fresh = [p.top for p in loaded.predict(images, top_k=3)]
    trained = [p.top for p in result.classifier.predict(images, top_k=3)]
    for a, b in zip(fresh, trained):
        assert [c for c, _ in a] == [c for c, _ in b]
        assert [p for _, p in a] == pytest.approx([p for _, p in b], abs=1e-4)
    evaluation = loaded.evaluate(tiny_dataset)
    assert evaluation.accuracy == pytest.approx(result.metrics.val_accuracy)


def _feature_precisions(cache_dir) -> set[str]:
    """What the cached features of a run were computed in, as their entries record it."""
    return {json.loads(meta.read_text())["precision"] for meta in Path(cache_dir).glob("features/*/meta.json")}


def test_explicit_bf16_computes_and_is_recorded_in_bf16(tiny_dataset, tmp_path, fresh_cache):
    """--precision bf16 (emulated where the CPU lacks it): the features, the scores and predictions are
    bf16 autocast, and graft.json says so."""
    result = graft.train(tiny_dataset, strategy="linear-probe", precision="bf16", out=tmp_path, cache_dir=fresh_cache,
                         **FAST)
    assert _feature_precisions(fresh_cache) == {"bf16"}
    assert result.record.inference_precision == "bf16" and result.record.config.runtime.precision == "bf16"
    assert graft.load(result.run_dir).precision == "bf16"


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set GRAFT_CPU_BF16 (0: the CPU lacks native bf16, 1: it has it) with the detection's memo cleared
    before and after, so neither this test nor the next sees a stale answer."""
    from graft.runtime import cpu_has_fast_bf16

    def force(value: str) -> None:
        monkeypatch.setenv("GRAFT_CPU_BF16", value)
        cpu_has_fast_bf16.cache_clear()

    cpu_has_fast_bf16.cache_clear()
    yield force
    cpu_has_fast_bf16.cache_clear()


@pytest.mark.skipif(torch.cuda.is_available(), reason="precision auto follows the GPU there, not the CPU")
@pytest.mark.parametrize("native_bf16", ["0", "1"])
def test_auto_precision_scores_and_predicts_in_fp32_on_any_cpu(tiny_dataset, tmp_path, cpu_bf16, native_bf16,
                                                               fresh_cache):
    """Inference is fp32 under --precision auto whatever the CPU (bf16 features moved a probe's C and its
    val accuracy by 2 points on one set, issue 24): the val accuracy graft.json reports is the fp32
    model's, measured on fp32 features (graft once scored bf16 features while the record said fp32)."""
    cpu_bf16(native_bf16)
    result = graft.train(tiny_dataset, strategy="linear-probe", precision="auto", out=tmp_path, cache_dir=fresh_cache,
                         **FAST)
    assert _feature_precisions(fresh_cache) == {"32"}
    assert result.record.inference_precision == "32" and result.record.config.runtime.precision == "auto"
    loaded = graft.load(result.run_dir)
    assert loaded.precision == "32"
    assert loaded.evaluate(tiny_dataset / "val").accuracy == pytest.approx(result.metrics.val_accuracy)


def test_a_model_trains_again_after_extraction_and_prediction(tiny_dataset, tmp_path):
    """Inference must not leave parameters unusable for training (inference tensors). Torch computes both
    passes: the inference tensors were torch's (ONNX Runtime, auto's engine on a CPU, never touches the
    module's parameters, and tracing it into this test's cache took seconds)."""
    from graft.data.discover import find_data
    from graft.features import FeatureCache, backbone_features
    from graft.runtime import Runtime

    backbone = create_backbone("tf_efficientnet_lite0", img_size=32)
    splits = find_data(tiny_dataset)
    runtime = Runtime.resolve(workers=0, progress=False, engine="torch")
    backbone_features(backbone, splits.val, split="val", cache=FeatureCache(tmp_path), runtime=runtime)
    model = graft.model.GraftModel(backbone, torch.nn.Linear(backbone.num_features, 3))
    graft.classifier.predict_logits(model, splits.val[:2], backbone.data_config, runtime=runtime.but(batch_size=64))
    model.unfreeze()
    loss = model(torch.randn(2, 3, 32, 32)).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_image_phase_that_only_hurts_is_not_kept(tiny_dataset, tmp_path):
    """With a learning rate that wrecks the model, the head-phase model is what gets saved."""
    run = graft.train(tiny_dataset, strategy="finetune", lr=50.0, backbone_lr_ratio=1.0, out=tmp_path, **{**FAST, "epochs": 1})
    images = [row for row in run.history if row.phase == "images"]
    assert images and images[0].val_acc < run.metrics.val_accuracy


def test_linear_probe_chooses_c_by_cross_validation_unless_given(tiny_dataset, tmp_path):
    chosen = graft.train(tiny_dataset, strategy="linear-probe", out=tmp_path, **FAST)
    assert chosen.metrics.logreg_c in LOGREG_GRID
    given = graft.train(tiny_dataset, strategy="linear-probe", logreg_c=0.5, out=tmp_path, **FAST)
    assert given.metrics.logreg_c == 0.5


def test_a_second_identical_linear_probe_reuses_the_stored_fit(tiny_dataset, tmp_path, monkeypatch, fresh_cache):
    """The logistic regression is a function of the cached features: fitted once, stored beside them."""
    from sklearn.preprocessing import StandardScaler

    options = dict(out=tmp_path, cache_dir=fresh_cache, **FAST)
    first = graft.train(tiny_dataset, strategy="linear-probe", name="first", **options)
    # every logistic fit standardises its features first (one StandardScaler.fit a fit)
    monkeypatch.setattr(StandardScaler, "fit", lambda *args, **kwargs: pytest.fail("fitted again instead of reusing the stored fit"))
    second = graft.train(tiny_dataset, strategy="linear-probe", name="second", **options)
    assert second.metrics.logreg_c == first.metrics.logreg_c
    for a, b in zip(first.classifier.model.head.parameters(), second.classifier.model.head.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(pytest.fail.Exception):  # another C is another fit
        graft.train(tiny_dataset, strategy="linear-probe", name="third", logreg_c=0.5, **options)


def test_strategy_auto_follows_the_advice_and_records_it(tiny_dataset, tmp_path):
    """--strategy auto: the data is measured first, auto's plan trains, graft.json says why."""
    run = graft.train(tiny_dataset, strategy="auto", out=tmp_path, **FAST)
    meta = json.loads((run.run_dir / "graft.json").read_text())
    advice = meta["advice"]
    assert advice["size"] == "small"  # 12 training images per class
    assert meta["strategy"] == advice["auto"]["strategy"] in STRATEGIES and advice["reasons"] and advice["auto"]["reasons"]
    assert run.classifier.record.advice == advice
    if meta["strategy"] == "truncate":
        assert run.classifier.model.backbone.cut == advice["cut"]
