"""graft advise: real measurements with EfficientNet-Lite0's ImageNet weights at 64 px.

The embedded CIFAR-10 sample (photos, 200 per class) must read as similar to ImageNet, generated
textures and digits as different; fewer images per class must turn large into small, and the
recommended strategy must follow the course's four cases.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import shutil
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

from conftest import set_terminal_width
from graft.advise import (
    DRIFT_DIFFERENT,
    LARGE_PER_CLASS,
    PROBE_MARGIN,
    SAMPLE_PER_CLASS,
    Advice,
    StageEvidence,
    advise,
    advise_splits,
    best_stage,
    cut_search,
    judge_similarity,
)
from graft.advise.synthetic import TEXTURES, make_digits, make_textures
from graft.backbones import create_backbone, stage_infos
from graft.data.discover import find_data
from graft.runtime import Runtime
from graft.strategies import STRATEGIES
from test_cli import run_main  # through main(), as the console script runs

CIFAR = Path(str(files("graft") / "demo_data/cifar10-sample"))
QUICK = dict(img_size=64, sample_per_class=20, workers=0, progress=False)
QUIET = Runtime.resolve(workers=0, progress=False)  # what advise_splits and cut_search take instead of workers/progress


def _subsample(source: Path, target: Path, per_class: int) -> Path:
    """The first `per_class` images of each class of source/train, as a folder of class folders."""
    for folder in sorted((source / "train").iterdir()):
        (target / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:per_class]:
            shutil.copy(image, target / folder.name / image.name)
    return target


@pytest.fixture(scope="module")
def cifar_large() -> Advice:
    return advise(CIFAR, **QUICK)


@pytest.fixture(scope="module")
def cifar_small(tmp_path_factory) -> Advice:
    # advise_splits: what `graft train --strategy auto` calls with the data it has already found.
    return advise_splits(find_data(_subsample(CIFAR, tmp_path_factory.mktemp("cifar10"), 10)), img_size=64,
                         sample_per_class=20, runtime=QUIET)


@pytest.fixture(scope="module")
def textures_small(tmp_path_factory) -> Path:
    return make_textures(tmp_path_factory.mktemp("textures-small"), per_class=12, size=32)


@pytest.fixture(scope="module")
def textures_large(tmp_path_factory) -> Path:
    # A fifth goes to validation: just enough images for graft's default line between small and large.
    per_class = math.ceil(LARGE_PER_CLASS / 0.8) + 2
    return make_textures(tmp_path_factory.mktemp("textures-large"), per_class=per_class, size=32, seed=1)


def test_cifar_sample_is_similar_to_imagenet_and_large(cifar_large):
    assert cifar_large.images_per_class == 200 >= LARGE_PER_CLASS
    assert (cifar_large.size, cifar_large.similarity, cifar_large.case) == ("large", "similar", 3)
    assert cifar_large.strategy == "finetune" and cifar_large.cut is None
    assert cifar_large.stages[-1].bn_drift < DRIFT_DIFFERENT
    # On photos the deepest features are what ImageNet taught: they probe far better than the first stage's.
    probes = [stage.probe_accuracy for stage in cifar_large.stages]
    assert probes[-1] > probes[0] + 0.1
    assert cifar_large.sampled == 200  # 20 per class, not all 2,000


def test_the_same_photos_cut_to_10_per_class_are_small(cifar_small, cifar_large):
    assert cifar_small.images_per_class == 8  # 10 per class, 20% of them held out for validation
    assert (cifar_small.size, cifar_small.similarity, cifar_small.case) == ("small", "similar", 1)
    assert cifar_small.strategy == "linear-probe" and cifar_small.strategy != cifar_large.strategy


def test_generated_textures_are_different_small_then_large(textures_small, textures_large, cifar_large):
    small = advise(textures_small, **QUICK)
    large = advise(textures_large, **QUICK)
    for advice in (small, large):
        assert advice.similarity == "different"
        assert advice.stages[-1].bn_drift >= DRIFT_DIFFERENT
    assert (small.size, small.case, small.strategy) == ("small", 2, "truncate")
    assert small.cut == small.best_stage < len(small.stages) - 1  # an earlier stage does as well as the last
    assert (large.size, large.case, large.strategy) == ("large", 4, "finetune")
    assert large.backbone_lr_ratio > cifar_large.backbone_lr_ratio  # the base must move further than for photos
    assert large.images_per_class >= LARGE_PER_CLASS > small.images_per_class


def test_cut_search_gives_one_probe_per_stage_and_the_best_is_the_argmax(tmp_path):
    digits = make_digits(tmp_path / "digits", per_class=10, size=32)
    splits = find_data(digits)
    stages = cut_search(splits, img_size=64, sample_per_class=8, runtime=QUIET)
    infos = stage_infos(create_backbone("tf_efficientnet_lite0", img_size=64))
    assert [s.index for s in stages] == [i.index for i in infos]
    assert [s.channels for s in stages] == [i.channels for i in infos]
    accuracies = [s.probe_accuracy for s in stages]
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    assert best_stage(stages) == int(np.argmax(accuracies))
    # Ten digits: the best stage reads them far above chance (10%), the first stage's colour statistics cannot.
    assert max(accuracies) > 0.6 and accuracies[0] < max(accuracies)
    # Digits on black drift most where ImageNet's pixels (first stage) and objects (last stage) are encoded.
    assert stages[-1].bn_drift >= DRIFT_DIFFERENT and stages[0].bn_drift >= DRIFT_DIFFERENT


def test_advice_is_json_and_a_train_command(cifar_small):
    record = json.loads(json.dumps(cifar_small.to_dict()))
    assert record["strategy"] in STRATEGIES and record["strategy"] != "auto"
    assert len(record["stages"]) == len(cifar_small.stages) and record["reasons"]
    command = cifar_small.command("photos/")
    assert command.startswith("graft train photos/ --strategy linear-probe") and "--img-size 64" in command
    assert cifar_small.train_options()["strategy"] == "linear-probe"


def test_best_stage_prefers_the_earlier_of_tied_stages():
    stages = [StageEvidence(i, 8, 0.5, a) for i, a in enumerate([0.4, 0.9, 0.95, 0.95, 0.9])]
    assert best_stage(stages) == 2  # the shorter network does as well


@pytest.mark.parametrize(
    "drift, probes, similar",
    [
        (0.2, [0.3, 0.5, 0.6], True),  # low drift, deepest best: photos
        (0.5, [0.3, 1.0, 1.0], False),  # high drift, an earlier stage as good: textures
        (0.2, [0.3, 0.8, 0.79 - PROBE_MARGIN], False),  # the probes overrule a low drift by a clear margin
        (0.5, [0.3, 0.5, 0.51 + PROBE_MARGIN], True),  # ... and a high one
        (0.2, [0.3, 0.8, 0.8 - PROBE_MARGIN / 2], True),  # but not within their noise
        (None, [0.3, 0.5, 0.6], True),  # no BatchNorm: the probes decide
        (None, [0.3, 0.6, 0.6], False),
        (0.5, [None, None, None], False),  # too few images to probe: the drift decides
    ],
)
def test_judge_similarity_combines_drift_and_probes(drift, probes, similar):
    stages = [StageEvidence(i, 8, drift, p) for i, p in enumerate(probes)]
    assert judge_similarity(stages)[0] is similar


def test_cli_prints_evidence_and_recommendation(textures_small, capsys, monkeypatch):
    code, output = run_main(["advise", textures_small, "--img-size", "64", "--sample-per-class", "6", "--workers", "0"],
                            capsys, monkeypatch)
    assert code in (0, None), output
    for text in ("BN drift", "probe accuracy", "<- best cut", "Case 2", "The course's recipe for case 2: truncate --cut",
                 f"Recommended: graft train {textures_small} --strategy", "auto: "):
        assert text in output


def test_recommended_command_stays_on_one_line_in_a_narrow_terminal(textures_small, capsys, monkeypatch):
    """The console wrapped the command at 80 columns once: at 40 it must still be whole, to copy."""
    set_terminal_width(monkeypatch, 40)
    code, output = run_main(["advise", textures_small, "--img-size", "64", "--sample-per-class", "6", "--workers", "0"],
                            capsys, monkeypatch)
    assert code in (0, None), output
    commands = [line for line in output.splitlines() if "graft train" in line]
    assert commands, output
    assert any(re.search(rf"^Recommended: graft train {re.escape(str(textures_small))} --strategy [a-z-]+.* --img-size 64",
                         line) for line in commands), commands


def test_cli_json_parses(textures_small, capsys, monkeypatch):
    code, output = run_main(["advise", textures_small, "--img-size", "64", "--sample-per-class", "6", "--workers", "0",
                             "--json"], capsys, monkeypatch)
    assert code in (0, None)
    advice = json.loads(output)
    assert advice["case"] == 2 and advice["cut"] == advice["best_stage"]
    assert len(advice["stages"]) == 5 and advice["sampled"] == 6 * len(TEXTURES)


def test_cli_defaults_are_the_library_defaults():
    from graft.cli.advise import advise as command

    defaults = {name: p.default for name, p in inspect.signature(command).parameters.items()}
    assert defaults["sample_per_class"] == SAMPLE_PER_CLASS and defaults["large_per_class"] == LARGE_PER_CLASS


@pytest.mark.parametrize(
    "args, expected",
    [
        (["advise", "no/such/folder"], "no/such/folder"),
        (["advise", CIFAR, "--sample-per-class", "1"], "--sample-per-class 1"),
        (["advise", CIFAR, "--weights", "none"], "--weights none"),
        (["advise", CIFAR, "--large-per-class", "0"], "--large-per-class 0"),
    ],
)
def test_bad_input_is_one_clear_error(args, expected, capsys, monkeypatch):
    code, output = run_main(args, capsys, monkeypatch)
    assert code == 2
    assert expected in output and "Traceback" not in output


def test_the_recommendation_is_what_auto_runs_and_the_course_s_recipe_is_named_as_such():
    """`graft advise` printed "Recommended: --strategy truncate --cut 0" and then "auto: linear-probe"
    (issue 24): the recommendation is now what auto runs, with auto's reasons; the course's case is named."""
    from graft.advise import recommend
    from graft.advise.auto import auto_plan, recommendation

    tied = [StageEvidence(index=i, channels=8, bn_drift=0.5, probe_accuracy=1.0) for i in range(3)]
    advice = recommend(2, stages=tied, best=0, reasons=["drift"], images_per_class=56, train_images=280)
    plan = auto_plan(advice)
    text = recommendation(advice, plan, "photos/")
    recommended = [line for line in text.splitlines() if line.startswith("Recommended")]
    assert recommended == ["Recommended: graft train photos/ --strategy linear-probe"], text
    assert "The course's recipe for case 2: truncate --cut 0; auto runs linear-probe here instead" in text
    assert "auto: linear-probe" in text and plan.reasons[0] in text
    # where they agree, one line says so; a probe-finetune plan is auto's own command (it decides after the probe)
    lead = [StageEvidence(index=i, channels=8, bn_drift=0.5, probe_accuracy=a) for i, a in enumerate([0.9, 0.7, 0.6])]
    truncate = recommend(2, stages=lead, best=0, reasons=[], images_per_class=56, train_images=280)
    described = recommendation(truncate, auto_plan(truncate), "photos/")
    assert "truncate --cut 0, which is what auto runs here" in described
    assert "Recommended: graft train photos/ --strategy truncate --cut 0" in described
    large = recommend(3, stages=lead, best=0, reasons=[], images_per_class=500, train_images=2500)
    assert "Recommended: graft train photos/\n" in recommendation(large, auto_plan(large), "photos/") + "\n"


def test_the_readme_describes_what_auto_does_on_small_data_unlike_imagenet():
    """At 56 images per class on data unlike ImageNet auto kept a frozen base, where the README said
    probe-finetune from 50 (issue 24): the README now says what auto_plan does, with its own numbers."""
    from graft.advise import recommend
    from graft.advise.auto import FINETUNE_MIN_IMAGES, FINETUNE_MIN_PER_CLASS, PROBE_GOOD_ENOUGH_FEW, auto_plan

    stages = [StageEvidence(index=i, channels=8, bn_drift=0.5, probe_accuracy=a) for i, a in enumerate([0.6, 0.8, 0.8])]
    plan = lambda case, per_class: auto_plan(recommend(case, stages=stages, best=1, reasons=[],  # noqa: E731
                                                         images_per_class=per_class, train_images=int(per_class * 10))).strategy
    assert plan(2, 56) == plan(2, LARGE_PER_CLASS - 1) == "linear-probe"  # unlike ImageNet, small: frozen
    assert plan(4, LARGE_PER_CLASS) == plan(1, FINETUNE_MIN_PER_CLASS) == "probe-finetune"
    assert plan(1, FINETUNE_MIN_PER_CLASS - 1) == "linear-probe"
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    auto = readme[readme.index("**`--strategy auto`, the default**"):readme.index("Fine-tuning then runs")]
    assert f"on data unlike ImageNet under {LARGE_PER_CLASS} images per class" in auto
    assert f"on data like ImageNet under {FINETUNE_MIN_PER_CLASS} images per class, `linear-probe`" in auto
    assert f"from {FINETUNE_MIN_PER_CLASS} per class on data like ImageNet, from {LARGE_PER_CLASS} on data unlike it" in auto
    line = readme[readme.index("Fine-tuning then runs"):]
    assert (f"{PROBE_GOOD_ENOUGH_FEW:.0%} on data like it with under {FINETUNE_MIN_IMAGES} training images in all"
            in line[:400])
