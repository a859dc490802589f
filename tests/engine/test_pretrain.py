"""`skipseg pretrain` and `pretrained: shapes`: tiny runs write files that every model family loads
through the ImageNet path (surgery included), shipped files match their cards, and no pretraining
image is a segmentation image."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skipseg.cli import main
from skipseg.data.shapes import render_shapes_image
from skipseg.data.shapes.objects import CLASS_NAMES, render_object
from skipseg.engine.optim import lr_factor
from skipseg.engine.pretrain import pretrain
from skipseg.errors import SkipsegError
from skipseg.models import build_model
from skipseg.models import pretrained as shipped
from skipseg.models.init import adaptive_pool_matrix, fc_to_conv
from skipseg.models.pretrained import read_card, sha256, shipped_cards

TINY = ["pretrain.val_images=16", "train.batch_size=8", "train.warmup=2", "train.checkpoint_every=2"]


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "vgg.pt"
    pretrain("vgg16_bn", out, width=1 / 16, size=32, iterations=4, images=32, overrides=TINY, progress=False)
    return out


def test_tiny_pretraining_writes_a_torchvision_state_dict_and_its_card(vgg_file):
    card = json.loads(vgg_file.with_suffix(".json").read_text())
    assert card["backbone"] == "vgg16_bn" and card["width"] == 1 / 16 and card["input_size"] == 32
    assert card["classes"] == CLASS_NAMES and card["iterations"] == 4 and 0 <= card["top1"] <= 1
    assert card["sha256"] == sha256(vgg_file) and card["command"].startswith("skipseg pretrain vgg16_bn --out ")
    state = torch.load(vgg_file, weights_only=True)
    assert state["features.0.weight"].dtype == torch.float16  # fp16 storage
    assert state["classifier.6.weight"].shape == (20, 256)  # torchvision's layout, 20 shape families


def test_fcn_surgery_copies_the_pretrained_tensors_and_keeps_score_layers_zero(vgg_file):
    state = torch.load(vgg_file, weights_only=True)
    model = build_model("fcn8s", num_classes=5, width=1 / 16, batch_norm=True, weights=str(vgg_file))
    mine = model.backbone.state_dict()
    assert torch.equal(mine["features.7.weight"], state["features.7.weight"].float())
    assert torch.equal(mine["features.8.running_var"], state["features.8.running_var"].float())
    assert torch.equal(mine["fc6.weight"], state["classifier.0.weight"].float().reshape(256, 32, 7, 7))
    assert torch.equal(mine["fc7.weight"][:, :, 0, 0], state["classifier.3.weight"].float())
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert not getattr(model.head, name).weight.any()  # zero-initialised, as the reference


def test_deconvnet_below_224_folds_the_classifier_pooling_into_fc6(vgg_file):
    state = torch.load(vgg_file, weights_only=True)
    model = build_model("deconvnet", num_classes=5, width=1 / 16, input_size=64, weights=str(vgg_file))
    fc6 = model.backbone.fc6.weight  # [256, 32, 2, 2]
    assert torch.equal(model.backbone.features[0].weight, state["features.0.weight"].float())
    x = torch.randn(3, 32, 2, 2)  # a pool5 map at 64 px
    linear = F.linear(F.adaptive_avg_pool2d(x, 7).flatten(1), state["classifier.0.weight"].float())
    assert torch.allclose(F.conv2d(x, fc6).flatten(1), linear, atol=1e-4)


@pytest.mark.parametrize("size,out", [(2, 7), (3, 7), (7, 7), (9, 7), (1, 6)])
def test_adaptive_pool_matrix_is_torchs_adaptive_average_pooling(size, out):
    x = torch.randn(2, size)
    assert torch.allclose(F.adaptive_avg_pool1d(x[:, None], out)[:, 0], x @ adaptive_pool_matrix(size, out).T)
    weight = torch.randn(4, 3 * out * out)
    assert fc_to_conv(weight, size, 3, out).shape == (4, 3, size, size)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_inception_pretraining_loads_into_the_skip_net_trunk(tmp_path):
    out = tmp_path / "inc.pt"
    pretrain("inception_v3", out, size=75, iterations=1, images=8, overrides=TINY, progress=False)
    state = torch.load(out, weights_only=True)
    model = build_model("skipnet", num_classes=4, backbone="inception_v3", grid=3, head_channels=8, weights=str(out))
    trunk = dict(model.backbone.body.named_parameters())
    assert torch.equal(trunk["Mixed_5b.branch1x1.conv.weight"], state["Mixed_5b.branch1x1.conv.weight"].float())
    assert not model.head.score_top.weight.any()  # the score layer keeps its zero initialisation


def test_skip_net_on_a_narrow_vgg_loads_the_pretrained_trunk_at_its_width(vgg_file):
    state = torch.load(vgg_file, weights_only=True)
    model = build_model("skipnet", num_classes=4, backbone="vgg16_bn", width=1 / 16, grid=4, head_channels=8,
                        tap=4, weights=str(vgg_file))
    trunk = dict(model.backbone.body.named_parameters())
    assert torch.equal(trunk["features.30.weight"], state["features.30.weight"].float())
    # the numbered taps are the last ReLU before each pooling, at the narrowed channel counts
    assert [(t.name, t.channels, t.stride) for t in model.backbone.feature_info] == [
        ("features.5", 4, 1), ("features.12", 8, 2), ("features.22", 16, 4), ("features.32", 32, 8),
        ("features.42", 32, 16), ("features.43", 32, 32)]
    assert model.tap == "features.32" and not model.head.score_tap.weight.any()
    assert model(torch.randn(2, 3, 45, 61)).shape == (2, 4, 4, 4)


def test_pretrained_shapes_finds_the_shipped_file_by_architecture_and_width(vgg_file, tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    for suffix in (".pt", ".json"):
        shutil.copy(vgg_file.with_suffix(suffix), folder / f"shapes_vgg16_bn{suffix}")
    monkeypatch.setattr(shipped, "SHIPPED_DIR", folder)
    state = torch.load(vgg_file, weights_only=True)
    model = build_model("fcn32s", num_classes=3, width=1 / 16, batch_norm=True, pretrained="shapes")
    assert torch.equal(model.backbone.features[0].weight, state["features.0.weight"].float())
    with pytest.raises(SkipsegError, match=r"no shape-pretrained vgg16 at width 0.0625 .*shipped: vgg16_bn width 0.0625"):
        build_model("fcn32s", num_classes=3, width=1 / 16, pretrained="shapes")  # plain VGG16: none shipped
    (folder / "shapes_vgg16_bn.pt").write_bytes(b"damaged")
    with pytest.raises(SkipsegError, match="sha256 differs"):
        build_model("fcn32s", num_classes=3, width=1 / 16, batch_norm=True, pretrained="shapes")


def test_every_shipped_file_matches_its_card_and_its_model():
    cards = shipped_cards()
    for card in cards:
        assert sha256(card.path) == card.sha256, card.path
        assert read_card(card.path).command.startswith(f"skipseg pretrain {card.backbone} ")
        if card.backbone == "vgg16_bn":
            for name, extra in (("fcn8s", {"batch_norm": True}), ("deconvnet", {"input_size": 64}),
                                ("skipnet", {"backbone": "vgg16_bn", "grid": 8})):
                build_model(name, num_classes=7, width=card.width, pretrained="shapes", **extra)
        else:
            build_model("skipnet", num_classes=7, backbone=card.backbone, width=card.width, grid=9, pretrained="shapes")


def test_the_shipped_inception_is_the_skip_studys_trunk_at_its_width():
    card = next(c for c in shipped_cards() if c.backbone == "inception_v3")
    assert (card.width, card.input_size) == (0.25, 96) and card.top1 >= 0.6 and sha256(card.path) == card.sha256
    state = torch.load(card.path, weights_only=True)
    model = build_model("skipnet", num_classes=7, backbone="inception_v3", width=0.25, grid=15, input_size=139,
                        head_channels=16, tap=6, pretrained="shapes")
    trunk = model.backbone.body.state_dict()
    assert len(trunk) > 500 and all(torch.equal(v, state[k].to(v.dtype)) for k, v in trunk.items())
    assert not model.head.score_tap.weight.any()  # the heads start afresh
    assert model.eval()(torch.randn(2, 3, 139, 139)).shape == (2, 7, 15, 15)


def test_pretraining_images_are_never_segmentation_images():
    for seed in (0, 1):
        segmentation = {render_shapes_image(seed, i, 32)[0].tobytes() for i in range(40)}
        for split in ("train", "val"):
            objects = [render_object(seed, i, 32, split)[0] for i in range(40)]
            assert not any(image.tobytes() in segmentation for image in objects)
        train = {render_object(seed, i, 32, "train")[0].tobytes() for i in range(40)}
        assert not any(render_object(seed, i, 32, "val")[0].tobytes() in train for i in range(40))


def test_labels_name_the_one_visible_object():
    labels = [render_object(3, i, 48)[1] for i in range(60)]
    assert set(labels) <= set(range(20)) and len(set(labels)) >= 12  # all families drawn, roughly evenly
    image, label = render_object(3, 0, 48)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8


def test_pretraining_resumes_exactly(tmp_path):
    whole, split = tmp_path / "whole.pt", tmp_path / "split.pt"
    args = dict(width=1 / 16, size=32, images=32, overrides=[*TINY, "train.lr_schedule=constant"], progress=False)
    pretrain("vgg16_bn", whole, iterations=4, **args)
    pretrain("vgg16_bn", split, iterations=2, run_dir=tmp_path / "run", **args)
    pretrain("vgg16_bn", split, iterations=4, run_dir=tmp_path / "run", resume=True, **args)
    a, b = torch.load(whole, weights_only=True), torch.load(split, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["pretrain", "resnet9000", "--out", str(tmp_path / "x.pt")]) == 2
    assert main(["pretrain", "resnet18", "--width", "0.5", "--out", str(tmp_path / "x.pt")]) == 2
    assert main(["pretrain", "inception_v3", "--width", "0.3", "--size", "96", "--out", str(tmp_path / "x.pt")]) == 2
    assert main(["pretrain", "inception_v3", "--width", "0.25", "--size", "64", "--out", str(tmp_path / "x.pt")]) == 2
    assert main(["pretrain", "vgg16", "--out", str(tmp_path / "x.bin")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 5 and "resnet9000" in lines[0] and "width 1.0" in lines[1] and ".pt" in lines[4]
    assert "multiple of 1/16" in lines[2] and "input size 64x64: too small for this backbone" in lines[3]
    assert not any(tmp_path.iterdir())  # nothing written


def test_warm_up_ramps_the_learning_rate_linearly():
    from skipseg.config import TrainConfig

    factor = lr_factor(TrainConfig(lr_schedule="constant", warmup=4), total_steps=10)
    assert [factor(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    poly = lr_factor(TrainConfig(lr_schedule="poly", poly_power=1.0, warmup=0), total_steps=10)
    assert poly(5) == 0.5
