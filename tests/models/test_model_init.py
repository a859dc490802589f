"""Initialisation: fc → conv surgery, torchvision-format weight files, the ImageNet weights API
(never touching the network), and staged init FCN-32s → 16s → 8s."""
from __future__ import annotations

import logging

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.vgg import make_layers

from skipseg.core.checkpoint import save_checkpoint
from skipseg.errors import SkipsegError
from skipseg.models import init as model_init
from skipseg.models.backbones import VGG16_CFG, scaled
from skipseg.models.registry import build_model

TINY = 1 / 16


def test_fc_to_conv_equals_linear_on_a_kxk_map() -> None:
    torch.manual_seed(0)
    c, k, out = 5, 7, 6
    linear = nn.Linear(c * k * k, out)
    conv = nn.Conv2d(c, out, k)
    with torch.no_grad():
        conv.weight.copy_(model_init.fc_to_conv(linear.weight, k))
        conv.bias.copy_(linear.bias)
    x = torch.randn(3, c, k, k)
    assert torch.allclose(conv(x).flatten(1), linear(torch.flatten(x, 1)), atol=1e-5)  # torchvision's flatten
    with pytest.raises(SkipsegError, match="cannot become a 7x7"):
        model_init.fc_to_conv(torch.zeros(4, 50), 7)


def _tiny_torchvision_vgg16(batch_norm: bool = False) -> nn.Module:
    """torchvision's VGG class at width 1/16: same keys and forward (avgpool, flatten, classifier)."""
    cfg = [v if v == "M" else scaled(v, TINY) for v in VGG16_CFG]
    model = torchvision.models.VGG(make_layers(cfg, batch_norm=batch_norm), num_classes=1000, init_weights=True)
    c5, cfc = scaled(512, TINY), scaled(4096, TINY)
    model.classifier[0] = nn.Linear(c5 * 7 * 7, cfc)
    model.classifier[3] = nn.Linear(cfc, cfc)
    model.classifier[6] = nn.Linear(cfc, 1000)
    return model.eval()


def _tiny_torchvision_alexnet() -> nn.Module:
    model = torchvision.models.AlexNet(num_classes=1000)
    c = [scaled(v, TINY) for v in (64, 192, 384, 256, 256, 4096)]
    model.features = nn.Sequential(
        nn.Conv2d(3, c[0], 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(c[0], c[1], 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(c[1], c[2], 3, padding=1), nn.ReLU(), nn.Conv2d(c[2], c[3], 3, padding=1), nn.ReLU(),
        nn.Conv2d(c[3], c[4], 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
    )
    model.classifier[1] = nn.Linear(c[4] * 6 * 6, c[5])
    model.classifier[4] = nn.Linear(c[5], c[5])
    return model.eval()


@pytest.mark.parametrize("name,make_reference,fc7_index", [
    ("fcn8s", _tiny_torchvision_vgg16, 4),  # classifier[:5] ends with fc7's ReLU
    ("fcn8s", lambda: _tiny_torchvision_vgg16(batch_norm=True), 4),  # vgg16_bn layout
    ("fcn32s_alexnet", _tiny_torchvision_alexnet, 5),  # (Dropout, Linear, ReLU) x 2
])
def test_weights_file_end_to_end(tmp_path, name, make_reference, fc7_index) -> None:
    """A torchvision-format file → our backbone; at 224 pixels (pool5 = the classifier's 7x7 / 6x6
    input) fc7 at the centre cell equals torchvision's fc7 output: the surgery is right."""
    torch.manual_seed(0)
    reference = make_reference()
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    batch_norm = any(isinstance(m, nn.BatchNorm2d) for m in reference.modules())
    options = {"batch_norm": True} if batch_norm else {}
    model = build_model(name, width=TINY, weights=str(path), **options).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        features = reference.avgpool(reference.features(x))
        expected = reference.classifier[: fc7_index + 1](torch.flatten(features, 1))
        taps = model.backbone(x)
    # VGG fc6 is 7x7 pad 3 on a 7x7 map, AlexNet's 6x6 pad 3 on 6x6: cell (3, 3) sees exactly the map.
    assert torch.allclose(taps["fc7"][:, :, 3, 3], expected, atol=1e-4)
    assert torch.allclose(taps["pool5"], reference.features(x), atol=1e-5)


@pytest.mark.parametrize("name,torchvision_builder,kwargs", [
    ("fcn8s", torchvision.models.vgg16, {}),
    ("fcn32s_alexnet", torchvision.models.alexnet, {}),
    ("fcn32s_googlenet", torchvision.models.googlenet, {"aux_logits": True, "init_weights": False}),
])
def test_width_one_torchvision_state_dicts_fit(tmp_path, name, torchvision_builder, kwargs) -> None:
    """The real torchvision classifiers (shapes only, on the meta device) load through `weights`."""
    with torch.device("meta"):
        state = torchvision_builder(**kwargs).state_dict()
        torch.save(state, tmp_path / "tv.pth")  # meta tensors: a file of a few kB
        model = build_model(name, weights=str(tmp_path / "tv.pth"))
    mapped = model_init.torchvision_to_backbone(model.backbone, state)
    assert {k: v.shape for k, v in mapped.items()} == {
        k: v.shape for k, v in model.backbone.state_dict().items() if k in mapped
    }
    if name == "fcn8s":
        assert mapped["fc6.weight"].shape == (4096, 512, 7, 7) and mapped["fc7.weight"].shape == (4096, 4096, 1, 1)
        assert list(model.backbone.state_dict())[:2] == ["features.0.weight", "features.0.bias"]


def test_weights_file_errors(tmp_path) -> None:
    with pytest.raises(SkipsegError, match="not found"):
        build_model("fcn32s", width=TINY, weights=str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(SkipsegError, match="junk.pth: not a readable state_dict"):
        build_model("fcn32s", width=TINY, weights=str(tmp_path / "junk.pth"))
    torch.save(_tiny_torchvision_vgg16().state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(SkipsegError, match=r"features\.0\.weight has shape \(4, 3, 3, 3\)"):
        build_model("fcn32s", width=0.125, weights=str(tmp_path / "tiny.pth"))  # wrong width
    with pytest.raises(SkipsegError, match="missing"):
        build_model("fcn32s_alexnet", width=TINY, weights=str(tmp_path / "tiny.pth"))  # wrong network



def test_pretrained_offline_names_the_cache_file(hub) -> None:
    assert model_init.hub_cache_path("VGG16_Weights.IMAGENET1K_V1") == hub / "vgg16-397923af.pth"
    with torch.device("meta"), pytest.raises(SkipsegError) as info:
        build_model("fcn32s", pretrained="imagenet")
    message = str(info.value)
    assert str(hub / "vgg16-397923af.pth") in message and "weights=FILE" in message


def test_pretrained_uses_the_cached_file(hub) -> None:
    """A file where torch.hub looks is used (the real loading code, no download): built on meta."""
    hub.mkdir(parents=True)
    path = model_init.hub_cache_path("AlexNet_Weights.IMAGENET1K_V1")
    with torch.device("meta"):
        torch.save(torchvision.models.alexnet().state_dict(), path)
        model = build_model("fcn32s_alexnet", pretrained="imagenet")
    assert model.backbone.fc6.weight.shape == (4096, 256, 6, 6)


def test_pretrained_needs_width_one_and_one_source(tmp_path) -> None:
    with pytest.raises(SkipsegError, match="width=1.0"):
        build_model("fcn32s", width=0.5, pretrained="imagenet")
    with pytest.raises(SkipsegError, match="not both"):
        build_model("fcn32s", width=TINY, pretrained="imagenet", weights=str(tmp_path / "x.pth"))
    with pytest.raises(SkipsegError, match="imagenet"):
        build_model("fcn32s", width=TINY, pretrained="coco")


def _randomised(model: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    return model


def test_staged_init_32s_to_16s_to_8s(tmp_path, caplog) -> None:
    fcn32 = _randomised(build_model("fcn32s", width=TINY))
    save_checkpoint(tmp_path / "run32" / "checkpoints" / "best.pt", {"model": fcn32.state_dict(), "config": {}})
    with caplog.at_level(logging.INFO, logger="skipseg.models.init"):
        fcn16 = build_model("fcn16s", width=TINY, init_from=str(tmp_path / "run32"))  # a run folder
    assert "copied backbone" in caplog.text and "head.score_pool4" in caplog.text
    for key, value in fcn32.state_dict().items():
        if key.startswith(("backbone.", "head.score_fr.")):
            assert torch.equal(fcn16.state_dict()[key], value), key
    assert not fcn16.head.score_pool4.weight.any() and not fcn16.head.score_pool4.bias.any()
    assert torch.equal(build_model("fcn16s", width=TINY).head.upscore2.weight, fcn16.head.upscore2.weight)  # bilinear

    fcn16 = _randomised(fcn16)
    save_checkpoint(tmp_path / "fcn16.pt", {"model": fcn16.state_dict(), "config": {}})
    fcn8 = build_model("fcn8s", width=TINY, init_from=str(tmp_path / "fcn16.pt"))
    for key in ("backbone.fc6.weight", "backbone.fc7.bias", "head.score_fr.weight", "head.score_pool4.weight", "head.upscore2.weight"):
        assert torch.equal(fcn8.state_dict()[key], fcn16.state_dict()[key]), key
    assert not fcn8.head.score_pool3.weight.any()
    report = model_init.init_from_checkpoint(build_model("fcn8s", width=TINY), tmp_path / "fcn16.pt")
    assert "head.score_pool3.weight" in report["kept"] and "head.upscore16.weight" in report["ignored"]


def test_init_from_another_label_set_keeps_the_class_layers_initial(tmp_path, caplog) -> None:
    """Fine-tuning a model trained on other classes (COCO → VOC): everything but the class-shaped
    layers is copied, those keep their initial values (zero scores, bilinear upsampling)."""
    source = _randomised(build_model("fcn8s", width=TINY, num_classes=21))
    save_checkpoint(tmp_path / "coco.pt", {"model": source.state_dict(), "config": {"model": {"num_classes": 21}}})
    with caplog.at_level(logging.INFO, logger="skipseg"):
        tuned = build_model("fcn8s", width=TINY, num_classes=5, init_from=str(tmp_path / "coco.pt"))
    fresh = build_model("fcn8s", width=TINY, num_classes=5)
    report = model_init.init_from_checkpoint(build_model("fcn8s", width=TINY, num_classes=5), tmp_path / "coco.pt")
    assert set(report["reinitialised"]) == {k for k, v in fresh.state_dict().items() if 5 in v.shape[:2]}
    assert "head.score_fr.weight" in report["reinitialised"] and "head.upscore8.weight" in report["reinitialised"]
    for key, value in tuned.state_dict().items():
        expected = fresh.state_dict()[key] if key in report["reinitialised"] else source.state_dict()[key]
        assert torch.equal(value, expected), key
    assert "21 classes there, 5 here" in caplog.text
    # the class count must be why: a checkpoint that does not say it, or another width, stays an error
    save_checkpoint(tmp_path / "unknown.pt", {"model": source.state_dict(), "config": {}})
    with pytest.raises(SkipsegError, match=r"head\.score_fr\.weight has shape"):
        build_model("fcn8s", width=TINY, num_classes=5, init_from=str(tmp_path / "unknown.pt"))
    with pytest.raises(SkipsegError, match=r"backbone\.features\.0\.weight has shape"):
        build_model("fcn8s", width=0.125, num_classes=5, init_from=str(tmp_path / "coco.pt"))


def test_staged_init_errors(tmp_path) -> None:
    save_checkpoint(tmp_path / "fcn32.pt", {"model": build_model("fcn32s", width=TINY).state_dict(), "config": {}})
    with pytest.raises(SkipsegError, match=r"head\.score_fr\.weight has shape"):
        build_model("fcn16s", width=TINY, num_classes=5, init_from=str(tmp_path / "fcn32.pt"))
    with pytest.raises(SkipsegError, match=r"backbone\.features\.0\.weight has shape"):
        build_model("fcn16s", width=0.125, init_from=str(tmp_path / "fcn32.pt"))
    save_checkpoint(tmp_path / "other.pt", {"model": {"decoder.weight": torch.zeros(2)}, "config": {}})
    with pytest.raises(SkipsegError, match="no layer matches"):
        build_model("fcn16s", width=TINY, init_from=str(tmp_path / "other.pt"))
    with pytest.raises(SkipsegError, match="no such checkpoint"):
        build_model("fcn16s", width=TINY, init_from=str(tmp_path / "nowhere"))
