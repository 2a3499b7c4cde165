"""Looking inside the network (issue #13): the layer table against hand-computed shapes and counts,
feature maps with one panel per stage, channel rankings that repeat and come from the cache, and
clear messages for bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from graft.backbones import create_backbone, stage_infos
from graft.classifier import Classifier, load
from graft.cli.main import app, main
from graft.errors import GraftError
from graft.explain import (
    backbone_stages,
    feature_maps,
    feature_maps_figure,
    layer_table,
    model_inputs,
    model_view,
    rank_channels,
    receptive_field,
    run_top_channels,
    stage_outputs,
)
from graft.explain.feature_maps import strongest_maps
from graft.explain.layers import formula
from graft.model import GraftModel
from graft.report import write_report

runner = CliRunner()


@pytest.fixture(scope="module")
def resnet():
    """resnet10t (random weights) + a 3-class linear head, at 64 x 64 px."""
    net = create_backbone("resnet10t", weights="none", img_size=64)
    return GraftModel(net, nn.Sequential(nn.Linear(net.num_features, 3)))


def test_layer_shapes_and_counts_match_the_hand_computed_ones(resnet):
    table = layer_table(resnet)
    rows = {row.name: row for row in table.rows}
    assert table.input_size == (3, 64, 64)
    # The stem: 3x3 convolutions, the first with stride 2 and padding 1: (64 + 2 - 3) // 2 + 1 = 32.
    assert rows["conv1.0"].output == (24, 32, 32) and rows["conv1.0"].parameters == 3 * 3 * 3 * 24 == 648
    assert rows["conv1.0"].formula == "3x3 x 3 x 24 = 648"
    assert rows["conv1.3"].output == (32, 32, 32) and rows["conv1.3"].parameters == 3 * 3 * 24 * 32
    assert rows["conv1.6"].output == (64, 32, 32) and rows["conv1.6"].parameters == 3 * 3 * 32 * 64
    assert rows["bn1"].parameters == 2 * 64 and rows["act1"].parameters == 0
    assert rows["maxpool"].output == (64, 16, 16)  # 3x3, stride 2, padding 1
    # layer1's first block: two 3x3 convolutions of 64 channels (no bias) and their BatchNorms.
    assert rows["layer1.0.conv1"].output == (64, 16, 16) and rows["layer1.0.conv1"].parameters == 3 * 3 * 64 * 64
    assert rows["layer2.0.conv1"].output == (128, 8, 8)  # stride 2
    assert rows["layer4.0.conv2"].output == (512, 2, 2)
    assert rows["head.0"].output == (3,) and rows["head.0"].parameters == 512 * 3 + 3
    assert rows["head.0"].formula == "512 x 3 + 3 = 1,539"
    # The rows add up to the model and, stage by stage, to the per-stage table of `graft summary`.
    assert table.parameters == sum(p.numel() for p in resnet.parameters())
    per_stage = {str(stage.index): stage.parameters for stage in stage_infos(resnet.backbone)}
    for stage, total in per_stage.items():
        assert sum(row.parameters for row in table.rows if row.stage == stage) == total
    assert sum(row.parameters for row in table.rows if row.stage == "head") == 512 * 3 + 3
    assert table.stage_totals == list(per_stage.values())

    grouped = layer_table(resnet, depth=1)
    blocks = {row.name: row for row in grouped.rows}
    assert blocks["conv1"].parameters == 648 + 48 + 6912 + 64 + 18432 and blocks["conv1"].output == (64, 32, 32)
    assert blocks["layer3"].output == (256, 4, 4) and grouped.parameters == table.parameters


def test_the_convolution_formula_covers_groups_and_bias():
    depthwise = nn.Conv2d(8, 8, kernel_size=3, groups=8, bias=True)
    assert formula(depthwise) == "3x3 x 8/8 x 8 + 8 = 80"  # 3 * 3 * (8 / 8) * 8 + 8
    assert formula(nn.Conv2d(4, 6, kernel_size=(1, 5), groups=2, bias=False)) == "1x5 x 4/2 x 6 = 60"
    assert formula(nn.BatchNorm2d(16)).startswith("2 x 16 = 32")
    assert formula(nn.ReLU()) == ""


def test_trainable_follows_the_strategy(resnet):
    resnet.freeze_backbone(resnet.backbone.last_stages(1))
    try:
        table = layer_table(resnet)
    finally:
        resnet.freeze_backbone(None)
    assert table.trainable == sum(row.parameters for row in table.rows if row.stage in ("4", "head"))


def test_summary_layers_command():
    args = ["summary", "resnet10t", "--layers", "--img-size", "64", "--strategy", "linear-probe", "--classes", "3"]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "3x3 x 3 x 24 = 648" in result.output and "24 x 32 x 32" in result.output
    total = f"{sum(p.numel() for p in create_backbone('resnet10t', weights='none').parameters()) + 512 * 3 + 3:,}"
    assert f"Total params: {total}" in result.output and f"{total} parameters (1,539 trainable)" in result.output
    result = runner.invoke(app, [*args, "--depth", "1"], catch_exceptions=False)
    assert result.exit_code == 0 and "depth 1" in result.output and "layer4" in result.output


def test_receptive_field_of_the_stem_is_the_hand_computed_one(resnet):
    # Stage 0 of resnet10t ends after three 3x3 convolutions, the first with stride 2: 3 + 2*2 + 2*2 = 11 px.
    assert receptive_field(resnet.backbone, backbone_stages(resnet.backbone)[0]) == 11


def test_feature_maps_have_one_panel_per_stage(linear_probe_run, tmp_path):
    classifier = linear_probe_run.classifier
    image = str(next((Path(linear_probe_run.record.data.source) / "val" / "red").iterdir()))
    stages = backbone_stages(classifier.model.backbone)
    batch = model_inputs([image], classifier.data_config)
    maps = strongest_maps(classifier.model.backbone, batch[0], count=4)
    outputs = stage_outputs(classifier.model.backbone, batch, stages)
    for stage, shown in zip(stages, maps):
        assert shown.size == (32 // stage.reduction, 32 // stage.reduction)
        means = outputs[stage.index][0].mean(dim=(1, 2))
        assert shown.channels == [int(c) for c in torch.argsort(-means, stable=True)[:4]]
    figure = feature_maps_figure(model_view(batch[0], classifier.data_config), maps, backbone="lite0")
    panels = figure.subfigs[1].subfigs
    assert len(panels) == len(stages) == 5
    assert [p._suptitle.get_text().split(":")[0] for p in panels] == [f"Stage {s.index}" for s in stages]
    (result,) = feature_maps(classifier, [image], out_dir=tmp_path)
    assert result.png.name.endswith("-feature-maps.png") and Image.open(result.png).width > 800


def test_channel_rankings_repeat_and_come_from_the_cache(linear_probe_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(linear_probe_run.run_dir, run)
    classifier = load(run)
    first = run_top_channels(classifier, stage=-2, images=9, seed=3, progress=False, out_dir=tmp_path, channels=3,
                             per_channel=2)
    again = run_top_channels(classifier, stage=-2, images=9, seed=3, progress=False, channels=3, per_channel=2)
    assert not first.cached and again.cached  # one pass, then the feature cache
    assert first.to_dict()["channels"] == again.to_dict()["channels"] and first.png is not None and first.png.exists()
    # The ranking is the one computed by hand from the stage's maps.
    stage = backbone_stages(classifier.model.backbone)[-2]
    paths = [top.path for c in first.channels for top in c.images]
    inputs = model_inputs(sorted(set(paths)), classifier.data_config)
    means = stage_outputs(classifier.model.backbone, inputs, [stage])[stage.index].mean(dim=(2, 3))
    for channel in first.channels:
        for top in channel.images:
            row = sorted(set(paths)).index(top.path)
            # float16 in the cache, from uint8 pixels normalised in the backbone: close, not bitwise equal
            assert top.activation == pytest.approx(float(means[row, channel.channel]), rel=0.03)
    assert len(first.channels) == 3 and first.stage.index == 3 and first.images == 9


def test_rank_channels_is_stable_on_ties():
    activations = np.array([[1.0, 3.0, 3.0], [2.0, 1.0, 1.0], [2.0, 0.0, 0.0]])
    # per_channel 2: channel 0 -> rows 1, 2 (mean 2); channels 1 and 2 tie at 2.0 with rows 0, 1.
    assert rank_channels(activations, channels=3, per_channel=2) == [(0, 2.0, [1, 2]), (1, 2.0, [0, 1]), (2, 2.0, [0, 1])]


def test_bad_input_gets_a_clear_message(linear_probe_run, tmp_path, capsys, monkeypatch):
    run = str(linear_probe_run.run_dir)
    with pytest.raises(GraftError, match="has stages 0 to 4"):
        run_top_channels(linear_probe_run.classifier, stage=5, images=3, progress=False)
    record = linear_probe_run.record
    moved = dataclasses.replace(record, data=dataclasses.replace(record.data, source=str(tmp_path / "gone")))
    with pytest.raises(GraftError, match="gone is not there any more"):
        run_top_channels(Classifier(linear_probe_run.classifier.model, record.classes, moved), progress=False)
    with pytest.raises(GraftError, match="needs a run folder trained by graft"):
        run_top_channels(Classifier(linear_probe_run.classifier.model, record.classes), progress=False)
    cases = (
        (["explain", run, str(tmp_path / "missing.jpg"), "--feature-maps"], "missing.jpg: file not found"),
        (["explain", run, "--channels", "--stage", "-6"], "--stage -6: tf_efficientnet_lite0 has stages 0 to 4"),
        (["explain", run, "x.jpg", "--channels"], "--channels takes a run folder and no image"),
        (["summary", "resnet10t", "--depth", "2"], "--depth 2: use 1 or more, with --layers"),
        (["explain", run, "x.jpg", "--stage", "2"], "--stage and --images choose what --channels ranks"),
    )
    for args, message in cases:
        monkeypatch.setattr("sys.argv", ["graft", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        output = capsys.readouterr()
        assert exit_info.value.code == 2 and message in output.err and "Traceback" not in output.err, output.err


def test_commands_print_what_they_wrote(linear_probe_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(linear_probe_run.run_dir, run)
    image = next(Path(linear_probe_run.record.data.source).rglob("*.png"))
    result = runner.invoke(app, ["explain", str(run), str(image), "--feature-maps"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "feature-maps.png" in result.output and (run / "explain" / f"{image.stem}-feature-maps.png").exists()
    result = runner.invoke(app, ["explain", str(run), "--channels", "--images", "6", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)  # a warning may go to stderr
    assert answer["stage"] == 4 and len(answer["channels"]) == 6 and (run / "explain" / "channels-stage-4.png").exists()


def test_the_report_shows_the_last_two_stages(linear_probe_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(linear_probe_run.run_dir, run)
    record = dataclasses.replace(linear_probe_run.record)
    write_report(run, record=record, metrics=linear_probe_run.metrics)
    assert (run / "report" / "channels-stage-3.png").exists() and (run / "report" / "channels-stage-4.png").exists()
    assert "--channels --stage K" in (run / "report.md").read_text()
