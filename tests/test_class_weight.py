"""--class-weight balanced: rare classes count as much as common ones, in the logistic fit and the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import graft
from conftest import COLOURS, FAST
from graft.audit.checks import class_weights
from graft.data.discover import find_data
from graft.heads.logistic import _fit
from graft.training import module as training_module
from test_cli import run_main


@pytest.fixture(scope="module")
def imbalanced_dataset(tmp_path_factory):
    """train/: red and green 12 images each, blue 3; val/: 4 of each (40x40 px)."""
    from conftest import make_image

    root = tmp_path_factory.mktemp("imbalanced")
    seed = 0
    for split, counts in (("train", {"red": 12, "green": 12, "blue": 3}), ("val", dict.fromkeys(COLOURS, 4))):
        for name, count in counts.items():
            for index in range(count):
                seed += 1
                make_image(root / split / name / f"{index:03d}.png", color=COLOURS[name], seed=seed)
    return root


def test_balanced_weights_are_train_images_over_classes_times_the_class_count(imbalanced_dataset, tiny_dataset):
    splits = find_data(imbalanced_dataset)
    assert splits.classes == ["blue", "green", "red"]
    assert class_weights(splits, "none") is None
    assert class_weights(splits, "balanced") == pytest.approx([27 / (3 * 3), 27 / (3 * 12), 27 / (3 * 12)])
    # auto, the default: balanced where the audit flags a class (3 blue against 12: under half the median)
    assert graft.TrainConfig().optim.class_weight == "auto"
    assert class_weights(splits, "auto") == class_weights(splits, "balanced")
    assert class_weights(find_data(tiny_dataset), "auto") is None  # 12 of each


def test_a_balanced_logistic_fit_finds_the_rare_class_an_unweighted_one_misses():
    # 300 images of a common class and 12 of a rare one, 1.5 standard deviations apart on one feature.
    rng = np.random.default_rng(0)
    common, rare = rng.normal(0, 1, (300, 8)), rng.normal(0, 1, (12, 8))
    rare[:, 0] += 1.5
    x, y = np.vstack([common, rare]).astype(np.float32), np.array([0] * 300 + [1] * 12)
    test_rare = rng.normal(0, 1, (500, 8))
    test_rare[:, 0] += 1.5
    recall = {}
    for weight in (None, "balanced"):
        w, b, _, _ = _fit(x, y, None, 0, class_weight=weight)
        recall[weight] = float(((test_rare @ w.T + b).argmax(axis=1) == 1).mean())
    assert recall[None] < 0.1  # the unweighted fit all but never names the rare class
    assert recall["balanced"] > 0.5


def test_the_loss_and_the_probe_use_the_weights_and_the_run_records_them(imbalanced_dataset, tmp_path, monkeypatch):
    seen: list[torch.Tensor | None] = []
    original = training_module.F.cross_entropy

    def spy(logits, target, weight=None, **options):
        seen.append(weight)
        return original(logits, target, weight=weight, **options)

    monkeypatch.setattr(training_module.F, "cross_entropy", spy)
    options = dict(out=tmp_path, **FAST)
    run = graft.train(imbalanced_dataset, strategy="feature-extract", class_weight="balanced", name="fe", **options)
    weights = [w for w in seen if w is not None]
    assert weights and torch.allclose(weights[0], torch.tensor([3.0, 0.75, 0.75]))
    assert run.record.config.optim.class_weight == "balanced"

    # The probe's fit is cached by its settings: a balanced fit is never a stored unweighted one.
    plain = graft.train(imbalanced_dataset, strategy="linear-probe", class_weight="none", name="lp", **options)
    balanced = graft.train(imbalanced_dataset, strategy="linear-probe", class_weight="balanced", name="lp-b", **options)
    plain_bias, balanced_bias = (r.classifier.model.head.state_dict() for r in (plain, balanced))
    differs = [not torch.equal(plain_bias[k], balanced_bias[k]) for k in plain_bias]
    assert any(differs)


def test_a_bad_class_weight_is_refused_with_the_choices(tiny_dataset, tmp_path, capsys, monkeypatch):
    code, output = run_main(["train", tiny_dataset, "--class-weight", "heavy", "--out", tmp_path / "runs"],
                            capsys, monkeypatch)
    assert code == 2 and "--class-weight" in output and "none" in output and "balanced" in output
    assert "Traceback" not in output and not (tmp_path / "runs").exists()


def test_a_balanced_sampler_draws_each_class_about_equally_often_and_repeatably():
    from graft.training.datasets import balanced_sampler

    labels = [0] * 3 + [1] * 30 + [2] * 60
    draws = [labels[i] for _ in range(20) for i in balanced_sampler(labels, torch.Generator().manual_seed(1))]
    shares = np.bincount(draws) / len(draws)
    assert len(draws) == 20 * len(labels)  # an epoch is as long as the data
    assert shares == pytest.approx([1 / 3] * 3, abs=0.04)  # 1,860 draws: a share's standard error is 0.011
    again = [labels[i] for _ in range(20) for i in balanced_sampler(labels, torch.Generator().manual_seed(1))]
    assert again == draws


def test_balanced_batches_replace_the_weighted_loss_and_the_run_records_them(imbalanced_dataset, tmp_path, monkeypatch):
    from graft.training import datasets

    seen: list[torch.Tensor | None] = []
    drawn: list[int] = []
    original_loss, original_sampler = training_module.F.cross_entropy, datasets.balanced_sampler

    def spy(logits, target, weight=None, **options):
        seen.append(weight)
        return original_loss(logits, target, weight=weight, **options)

    def counting_sampler(labels, generator=None):
        sampler = original_sampler(labels, generator)
        drawn.append(len(labels))
        return sampler

    monkeypatch.setattr(training_module.F, "cross_entropy", spy)
    monkeypatch.setattr(datasets, "balanced_sampler", counting_sampler)
    run = graft.train(imbalanced_dataset, strategy="finetune", class_weight="balanced", sampler="balanced",
                      out=tmp_path, name="bal", **FAST)
    assert drawn == [27, 27]  # the head phase's cached features, then the images
    assert seen and all(weight is None for weight in seen)  # batches are balanced: the loss is not weighted again
    assert run.record.config.optim.sampler == "balanced"
