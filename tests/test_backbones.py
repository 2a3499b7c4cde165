"""Backbones: real ImageNet weights offline, weight files, the offline error, stages and cuts."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import save_file

from graft.backbones import create_backbone, list_backbones, predict_imagenet, stage_infos
from graft.backbones import weights as weights_module
from graft.backbones.backbone import build_timm_model
from graft.errors import GraftError, WeightsError


@pytest.fixture(scope="module")
def skimage_photos(tmp_path_factory):
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in ("chelsea", "coffee"):
        paths[name] = folder / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(paths[name])
    return paths


def test_lite0_imagenet_head_recognises_cat_and_espresso(skimage_photos):
    """The offline package's keys are mapped onto timm's Lite0 correctly: real ImageNet predictions."""
    chelsea, coffee = predict_imagenet([skimage_photos["chelsea"], skimage_photos["coffee"]], top_k=3)
    assert any("cat" in name for name, _ in chelsea), chelsea
    assert any("espresso" in name for name, _ in coffee), coffee
    assert coffee[0][0] == "espresso" and coffee[0][1] > 0.5


def test_default_backbone_is_offline_and_listed():
    entries = {e.name: e for e in list_backbones("efficientnet_lite")}
    assert entries["tf_efficientnet_lite0"].offline
    assert entries["tf_efficientnet_lite0"] == list_backbones("efficientnet_lite")[0]  # offline ones first
    assert not list_backbones("resnet18", offline_only=True)
    assert any(e.name == "resnet18" and e.pretrained for e in list_backbones("resnet18"))


def test_offline_without_weights_fails_fast_with_the_choices(monkeypatch):
    monkeypatch.setattr(weights_module, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(weights_module, "_in_hub_cache", lambda repo: False)
    start = time.perf_counter()
    with pytest.raises(WeightsError) as error:
        create_backbone("resnet18", weights="imagenet")
    message = str(error.value)
    assert "tf_efficientnet_lite0" in message and "--weights PATH" in message and "--weights none" in message
    assert time.perf_counter() - start < 10  # no minute of retries


def test_weights_from_a_safetensors_file_load_exactly(tmp_path):
    source = build_timm_model("test_efficientnet")
    path = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = create_backbone("test_efficientnet", weights=str(path))
    reference = {k: v for k, v in source.state_dict().items() if not k.startswith("classifier.")}
    for name, tensor in loaded.body.state_dict().items():
        assert torch.equal(tensor, reference[name]), name
    assert "mine.safetensors" in loaded.weights_source


def test_weights_file_without_classifier_loads_and_a_wrong_file_is_refused(tmp_path):
    source = build_timm_model("test_efficientnet")
    no_head = tmp_path / "no_head.pth"
    torch.save({k: v for k, v in source.state_dict().items() if not k.startswith("classifier.")}, no_head)
    create_backbone("test_efficientnet", weights=str(no_head))  # the head is ours anyway

    other = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in build_timm_model("test_resnet").state_dict().items()}, str(other))
    with pytest.raises(WeightsError, match="does not fit this backbone"):
        create_backbone("test_efficientnet", weights=str(other))
    with pytest.raises(WeightsError, match="not found"):
        create_backbone("test_efficientnet", weights=str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        create_backbone("test_efficientnet", weights=str(junk))


def test_unknown_backbone_suggests_names():
    with pytest.raises(GraftError, match="Unknown backbone 'resnet1800'.*graft backbones"):
        create_backbone("resnet1800", weights="none")


@pytest.mark.parametrize("name", ["test_efficientnet", "test_resnet", "test_convnext", "test_vit"])
def test_stages_partition_every_backbone_parameter(name):
    backbone = create_backbone(name, weights="none")
    names = [n for stage in backbone.stage_params for n in stage]
    assert sorted(names) == sorted(n for n, _ in backbone.named_parameters())
    assert all(backbone.stage_params), "every stage holds parameters"
    assert backbone(torch.randn(2, 3, 64, 64) if "vit" not in name else torch.randn(2, 3, *backbone.data_config.input_size[1:])).shape == (2, backbone.num_features)


def test_cut_keeps_early_stages_only():
    full = create_backbone("tf_efficientnet_lite0", img_size=64)
    cut = create_backbone("tf_efficientnet_lite0", cut=2, img_size=64)
    assert cut.num_features == 40 and cut.num_stages == 3
    assert cut(torch.randn(2, 3, 64, 64)).shape == (2, 40)
    assert sum(p.numel() for p in cut.parameters()) == sum(s.parameters for s in stage_infos(full)[:3])
    assert create_backbone("tf_efficientnet_lite0", cut=-2, img_size=64).num_features == 112
    with pytest.raises(GraftError, match="--cut 9"):
        create_backbone("tf_efficientnet_lite0", cut=9)


def test_preprocessing_comes_from_the_pretrained_config():
    lite = create_backbone("tf_efficientnet_lite0", weights="none")
    assert lite.data_config.mean == (0.5, 0.5, 0.5) and lite.data_config.image_size == 224
    resnet = create_backbone("resnet18", weights="none", img_size=96)
    assert resnet.data_config.mean == pytest.approx((0.485, 0.456, 0.406)) and resnet.data_config.image_size == 96


class _RunsCode:
    """An object whose unpickling would call a function: what a malicious .pth holds."""

    def __reduce__(self):
        return (print, ("unpickled: this must never run",))


class _CallsTheSystem:
    """An object whose unpickling would call into the os module (harmlessly here): torch names the module blocked."""

    def __reduce__(self):
        import os

        return (os.getpid, ())


@pytest.mark.parametrize("kind", ["pickle", "torch.save", "system", "truncated"])
def test_a_weights_file_graft_refuses_says_why(tmp_path, kind, capsys):
    """`evil.pth` was refused as `cannot read weights ()`: the reason was an empty line of torch's message."""
    import pickle

    path = tmp_path / "evil.pth"
    if kind == "pickle":
        path.write_bytes(pickle.dumps(_RunsCode(), protocol=4))
    elif kind == "torch.save":
        torch.save({"weight": _RunsCode()}, path)
    elif kind == "system":
        torch.save({"weight": _CallsTheSystem()}, path)
    else:
        torch.save({"weight": torch.zeros(4)}, path)
        path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(WeightsError) as error:
        create_backbone("tf_efficientnet_lite0", weights=str(path), img_size=32)
    message = str(error.value)
    assert "weights ()" not in message and str(path) in message, message
    assert "weights_only" not in message and "will likely succeed" not in message
    assert "unpickled" not in capsys.readouterr().out  # nothing in the file ran
    if kind != "truncated":
        assert "never unpickles" in message
