"""Class activation maps: the evidence lies on the object, CAM equals Grad-CAM for a linear head,
other heads and token backbones use Grad-CAM, the command writes readable PNGs, training still works."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torchvision import transforms as T
from typer.testing import CliRunner

from graft.backbones import create_backbone
from graft.classifier import Classifier
from graft.cli.main import app, main
from graft.config import TrainConfig
from graft.errors import GraftError
from graft.explain import CAM, GRAD_CAM, activation_maps, explain, find_class, imagenet_classifier, model_inputs
from graft.heads import HeadConfig, create_head
from graft.model import GraftModel
from graft.record import RunRecord

runner = CliRunner()


@pytest.fixture(scope="module")
def imagenet():
    """tf_efficientnet_lite0 with its own ImageNet head and real weights: it knows an espresso."""
    return imagenet_classifier()


@pytest.fixture(scope="module")
def halves():
    """224 x 448 composites: the coffee photo on one half, flat grey on the other."""
    coffee = data.coffee()  # 400 x 600, an espresso cup on a saucer
    square = np.asarray(Image.fromarray(coffee[:, 100:500]).resize((224, 224)))
    grey = np.full_like(square, 128)
    return {"left": np.concatenate([square, grey], axis=1), "right": np.concatenate([grey, square], axis=1)}


def _batch(pixels: np.ndarray, classifier: Classifier) -> torch.Tensor:
    """The whole composite, normalised as the backbone expects (no crop: both halves stay in view)."""
    config = classifier.data_config
    return T.Compose([T.ToTensor(), T.Normalize(config.mean, config.std)])(Image.fromarray(pixels))[None]


@pytest.mark.parametrize("side", ["left", "right"])
def test_the_espresso_map_lies_on_the_coffee(imagenet, halves, side):
    maps = activation_maps(imagenet.model, _batch(halves[side], imagenet))
    assert maps.method == CAM  # GAP + one Linear: CAM is exact
    assert imagenet.classes[int(maps.classes[0])] == "espresso"
    heat = maps.maps[0]
    assert heat.shape == (7, 14) and float(heat.min()) >= 0.0 and float(heat.max()) == pytest.approx(1.0)
    coffee_half = heat[:, :7] if side == "left" else heat[:, 7:]
    assert float(coffee_half.sum() / heat.sum()) > 0.8


def test_cam_and_grad_cam_agree_for_a_linear_head(imagenet, halves):
    batch = torch.cat([_batch(halves["left"], imagenet), _batch(halves["right"], imagenet)])
    cup = torch.tensor([find_class(imagenet.classes, "cup")] * 2)
    for classes in (None, cup):  # the predicted class, and another one
        cam = activation_maps(imagenet.model, batch, classes=classes, method="cam")
        grad = activation_maps(imagenet.model, batch, classes=classes, method="grad-cam")
        assert (cam.method, grad.method) == (CAM, GRAD_CAM)
        assert torch.equal(cam.classes, grad.classes)
        torch.testing.assert_close(cam.probabilities, grad.probabilities)
        for a, b in zip(cam.maps, grad.maps):
            assert np.corrcoef(a.flatten(), b.flatten())[0, 1] > 0.99


@pytest.mark.parametrize("name, hidden, method, grid", [
    ("test_resnet", None, CAM, (2, 2)),  # GAP + Linear
    ("test_resnet", 16, GRAD_CAM, (2, 2)),  # a hidden layer: CAM would not be exact
    ("test_convnext", None, GRAD_CAM, (2, 2)),  # a LayerNorm after pooling
    ("test_vit", None, GRAD_CAM, (10, 10)),  # tokens: the class token dropped, 100 patches on a grid
])
def test_other_heads_and_backbones_use_grad_cam(name, hidden, method, grid):
    torch.manual_seed(0)
    net = create_backbone(name, weights="none", img_size=None if name == "test_vit" else 64)
    model = GraftModel(net, create_head(net.num_features, 3, HeadConfig(hidden=hidden)))
    images = torch.randn(2, 3, *net.data_config.input_size[1:])
    maps = activation_maps(model, images)
    assert maps.method == method and tuple(maps.maps.shape) == (2, *grid)
    assert torch.equal(maps.classes, maps.probabilities.argmax(dim=1))
    assert float(maps.maps.min()) >= 0.0 and float(maps.maps.max()) <= 1.0 + 1e-6
    if method == GRAD_CAM:
        with pytest.raises(GraftError, match="grad-cam"):
            activation_maps(model, images, method="cam")


def test_explaining_leaves_the_model_trainable():
    net = create_backbone("test_efficientnet", weights="none", img_size=64)
    model = GraftModel(net, create_head(net.num_features, 3, HeadConfig(hidden=8, dropout=0.2)))
    model.freeze_backbone(net.last_stages(1))  # a mix of frozen and trainable parameters
    model.train()
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    for method in ("cam", "grad-cam", "auto"):
        try:
            activation_maps(model, torch.randn(2, 3, 64, 64), method=method)
        except GraftError:
            pass  # a hidden-layer head has no CAM
    assert model.training
    assert {name: p.requires_grad for name, p in model.named_parameters()} == before
    assert all(p.grad is None for p in model.parameters())
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    optimizer.step()
    assert all((p.grad is not None) == p.requires_grad for p in model.parameters())


def test_explain_writes_a_png_per_image_for_any_class(imagenet, tmp_path):
    photo = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(photo)
    (predicted,) = explain(imagenet, [photo], out_dir=tmp_path / "out")
    assert predicted.class_name == predicted.predicted == "espresso" and predicted.probability > 0.5
    (cup,) = explain(imagenet, [photo], class_name="Cup", out_dir=tmp_path / "out")  # any case, or a synonym
    assert cup.class_name == "cup" and cup.predicted == "espresso" and cup.probability < predicted.probability
    for result in (predicted, cup):
        with Image.open(result.png) as figure:
            assert figure.width > 600 and figure.height > 300  # the image and its map, side by side
    assert predicted.png != cup.png
    with pytest.raises(GraftError, match="no such class.*Close names: .*espresso"):
        explain(imagenet, [photo], class_name="espreso", out_dir=tmp_path)


def test_unknown_class_lists_the_classes():
    with pytest.raises(GraftError, match="Classes: blue, green, red"):
        find_class(["blue", "green", "red"], "purple")


def test_command_on_a_run_and_with_imagenet(tmp_path, halves, make_image, capsys, monkeypatch):
    net = create_backbone("test_efficientnet", weights="none", img_size=64)
    model = GraftModel(net, create_head(net.num_features, 3, HeadConfig(hidden=8)))
    classes = ["blue", "green", "red"]
    record = RunRecord(backbone="test_efficientnet", weights="random initialisation", cut=None,
                       data_config=net.data_config, classes=classes, strategy="finetune",
                       config=TrainConfig.from_options(backbone="test_efficientnet", hidden=8, dropout=0.0))
    run = tmp_path / "run"
    Classifier(model, classes, record).save(run)
    images = [make_image(tmp_path / "a" / "one.png", seed=1), make_image(tmp_path / "b" / "one.png", seed=2)]
    result = runner.invoke(app, ["explain", str(run), *map(str, images), "--class", "green", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["class_name"] for row in rows] == ["green", "green"] and rows[0]["method"] == GRAD_CAM
    pngs = sorted(p.name for p in (run / "explain").iterdir())
    assert pngs == ["one-green-2.png", "one-green.png"]  # same file name, two folders: both kept

    composite = tmp_path / "left.png"
    Image.fromarray(halves["left"]).save(composite)
    result = runner.invoke(app, ["explain", "--imagenet", str(composite), "--out", str(tmp_path / "maps")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "espresso" in result.output and (tmp_path / "maps" / "left-espresso.png").exists()

    for args, message in ((["explain", str(run), str(tmp_path / "missing.jpg")], "missing.jpg: file not found"),
                          (["explain", str(run), str(images[0]), "--class", "purple"], "Classes: blue, green, red")):
        monkeypatch.setattr("sys.argv", ["graft", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        output = capsys.readouterr()
        assert exit_info.value.code == 2 and message in output.err and "Traceback" not in output.err


def test_explain_answers_the_good_images_and_names_the_bad_one(linear_probe_run, tiny_dataset, tmp_path, capsys,
                                                               monkeypatch):
    """One unreadable file aborted every image (issue 24); predict goes on: explain now does too, exit 1."""
    good = sorted((tiny_dataset / "val" / "red").iterdir())[:2]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "maps"
    args = ["explain", linear_probe_run.run_dir, good[0], broken, good[1], "--out", out]
    monkeypatch.setattr("sys.argv", ["graft", *map(str, args), "--json"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    output = capsys.readouterr()
    assert exit_info.value.code == 1 and "Traceback" not in output.err
    rows = json.loads(output.out)
    assert [row["path"] for row in rows] == [str(good[0]), str(broken), str(good[1])]  # in the order given
    assert "png" in rows[0] and "png" in rows[2] and "corrupt" in rows[1]["error"]
    assert f"not read: {broken}" in output.err
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{image.stem}-{rows[i]['class_name']}.png"
                                                           for i, image in ((0, good[0]), (2, good[1])))


@pytest.mark.parametrize("hidden", [None, 8])  # CAM (a linear head) and Grad-CAM (a hidden layer)
@pytest.mark.parametrize("thresholds", [[0.0, 0.0, 2.0], [2.0, 2.0, 2.0]])  # two labels each; none (the likeliest)
def test_a_multi_label_model_is_explained_in_one_backbone_pass_per_batch(tmp_path, make_image, monkeypatch, hidden,
                                                                        thresholds):
    """graft explain on a multi-label model ran the backbone twice per batch: once for the labels
    given, once more for their maps. The maps of every label come from the one pass, and are the maps
    of each image and label computed on their own."""
    explaining = importlib.import_module("graft.explain.explain")  # the module, not the function it exports

    torch.manual_seed(0)
    net = create_backbone("test_efficientnet", weights="none", img_size=64)
    model = GraftModel(net, create_head(net.num_features, 3, HeadConfig(hidden=hidden))).eval()
    classifier = Classifier(model, ["blue", "green", "red"], task="multilabel", thresholds=np.array(thresholds))
    images = [make_image(tmp_path / f"{index}.png", size=(64, 64), seed=index) for index in range(3)]
    forward = net.forward_features
    passes: list[int] = []
    monkeypatch.setattr(net, "forward_features", lambda batch: passes.append(len(batch)) or forward(batch))
    drawn: list[np.ndarray] = []
    figure = explaining._figure
    monkeypatch.setattr(explaining, "_figure", lambda result, view, heatmap, **kw: drawn.append(heatmap) or figure(
        result, view, heatmap, **kw))

    explained = explain(classifier, images, out_dir=tmp_path / "maps")
    assert passes == [3]  # one pass of the batch's three images
    given = 2 if thresholds[0] == 0.0 else 1
    assert len(explained) == len(drawn) == given * len(images)
    for explanation, heatmap in zip(explained, drawn):
        alone = activation_maps(model, model_inputs([explanation.path], classifier.data_config),
                                classes=torch.tensor([classifier.classes.index(explanation.class_name)]))
        np.testing.assert_allclose(heatmap, alone.maps[0].numpy(), atol=1e-5)
        assert explanation.probability == pytest.approx(float(alone.logits[0].sigmoid()[
            classifier.classes.index(explanation.class_name)]), abs=1e-6)
