"""DeconvNet: Table 2 layer by layer, the parameter count, deterministic unpooling, input checks,
channels_last/autocast, and ImageNet (VGG16_BN) initialisation without any download."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.vgg import make_layers

from skipseg.cli import main
from skipseg.core.checkpoint import save_checkpoint
from skipseg.errors import SkipsegError
from skipseg.models import init as model_init
from skipseg.models.backbones import VGG16_CFG, scaled, vgg16_classifier
from skipseg.models.describe import describe_model
from skipseg.models.registry import build_model
from skipseg.models.unpool import max_pool_with_switches, max_unpool

TINY = 1 / 32

# The paper's Table 2, transcribed: (name, kernel, output H = W, output channels). "pool"/"unpool"
# rows have no parameters; the input has 3 channels. The output row's "pad 1" is the paper's typo.
TABLE2 = [
    ("conv1-1", 3, 224, 64), ("conv1-2", 3, 224, 64), ("pool1", 2, 112, 64),
    ("conv2-1", 3, 112, 128), ("conv2-2", 3, 112, 128), ("pool2", 2, 56, 128),
    ("conv3-1", 3, 56, 256), ("conv3-2", 3, 56, 256), ("conv3-3", 3, 56, 256), ("pool3", 2, 28, 256),
    ("conv4-1", 3, 28, 512), ("conv4-2", 3, 28, 512), ("conv4-3", 3, 28, 512), ("pool4", 2, 14, 512),
    ("conv5-1", 3, 14, 512), ("conv5-2", 3, 14, 512), ("conv5-3", 3, 14, 512), ("pool5", 2, 7, 512),
    ("fc6", 7, 1, 4096), ("fc7", 1, 1, 4096), ("deconv-fc6", 7, 7, 512),
    ("unpool5", 2, 14, 512), ("deconv5-1", 3, 14, 512), ("deconv5-2", 3, 14, 512), ("deconv5-3", 3, 14, 512),
    ("unpool4", 2, 28, 512), ("deconv4-1", 3, 28, 512), ("deconv4-2", 3, 28, 512), ("deconv4-3", 3, 28, 256),
    ("unpool3", 2, 56, 256), ("deconv3-1", 3, 56, 256), ("deconv3-2", 3, 56, 256), ("deconv3-3", 3, 56, 128),
    ("unpool2", 2, 112, 128), ("deconv2-1", 3, 112, 128), ("deconv2-2", 3, 112, 64),
    ("unpool1", 2, 224, 64), ("deconv1-1", 3, 224, 64), ("deconv1-2", 3, 224, 64),
    ("output", 1, 224, 21),
]


def table2_parameters(num_classes: int = 21) -> int:
    """Weights + biases of every conv/deconv (k*k*C_in*C_out + C_out), plus batch norm's scale and
    shift (2*C_out) after each of them except the output layer."""
    total, channels = 0, 3
    for name, k, _, out in TABLE2:
        if "pool" in name:
            continue
        out = num_classes if name == "output" else out
        total += k * k * channels * out + out + (0 if name == "output" else 2 * out)
        channels = out
    return total


def test_parameter_count_matches_table2() -> None:
    with torch.device("meta"):
        model = build_model("deconvnet")
    count = sum(p.numel() for p in model.parameters())
    assert count == table2_parameters() == 251_805_653  # "approximately 252M"
    with torch.device("meta"):
        assert sum(p.numel() for p in build_model("deconvnet", num_classes=5).parameters()) == table2_parameters(5)


def test_describe_lists_every_table2_layer() -> None:
    info = describe_model("deconvnet", size=(224, 224))
    assert {"name", "params", "output_shape", "taps"} <= set(info) and info["output_shape"] == [21, 224, 224]
    assert [(row["name"], row["shape"]) for row in info["layers"]] == [
        (name, [c, s, s]) for name, _, s, c in TABLE2
    ]
    assert [(t["name"], t["stride"], t["shape"]) for t in info["taps"]] == [
        # each pooling's switches are taps too, on the pool's grid: what the decoder unpools with
        ("pool1", 2, [112, 112]), ("pool1_switches", 2, [112, 112]), ("pool2", 4, [56, 56]),
        ("pool2_switches", 4, [56, 56]), ("pool3", 8, [28, 28]), ("pool3_switches", 8, [28, 28]),
        ("pool4", 16, [14, 14]), ("pool4_switches", 16, [14, 14]), ("pool5", 32, [7, 7]),
        ("pool5_switches", 32, [7, 7]), ("fc7", 32, [1, 1]),
    ]
    small = describe_model("deconvnet", width=0.25, num_classes=3)
    assert small["layers"][-2] == {"name": "deconv1-2", "shape": [16, 224, 224]}
    assert small["output_shape"] == [3, 224, 224]


def test_cli_describe(capsys) -> None:
    assert main(["models", "describe", "deconvnet", "width=0.0625", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"name", "params", "output_shape", "taps", "layers"} == set(info)
    assert main(["models", "describe", "deconvnet", "--size", "224", "224"]) == 0
    text = capsys.readouterr().out
    assert "251,805,653" in text and "deconv-fc6      7 x 7 x 512" in text and "unpool1         224 x 224 x 64" in text
    assert main(["models", "describe", "deconvnet", "--size", "256", "256"]) == 2
    assert "256x256" in capsys.readouterr().err


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (13, 6), (224, 224)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_unpool_equals_max_unpool2d(size, channels_last) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    pooled, switches = max_pool_with_switches(x)
    values = pooled.detach().clone().requires_grad_(True)
    ours = max_unpool(values, switches, size)
    reference = F.max_unpool2d(pooled.detach(), switches, 2, 2, output_size=size)
    assert torch.equal(ours, reference)
    assert ours.is_contiguous(memory_format=torch.channels_last) == channels_last
    grad = torch.randn_like(ours)
    ours.backward(grad)
    assert torch.equal(values.grad, grad.flatten(2).gather(2, switches.flatten(2)).view_as(pooled))
    with pytest.raises(ValueError, match="cannot give"):
        max_unpool(pooled, switches, (size[0] + 2, size[1]))


def _train_step(model: nn.Module, seed: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    x, target = torch.randn(2, 3, 224, 224), torch.randint(0, 21, (2, 224, 224))
    model.zero_grad()
    F.cross_entropy(model(x), target).backward()
    return [p.grad.clone() for p in model.parameters()]


def test_deterministic_algorithms_forward_backward() -> None:
    torch.manual_seed(0)
    model = build_model("deconvnet", width=1 / 64).train()
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.raises(RuntimeError, match="deterministic"):  # why the unpooling is our own
            F.max_unpool2d(*F.max_pool2d(torch.randn(1, 1, 4, 4), 2, 2, return_indices=True), 2, 2)
        first, second = _train_step(model, 1), _train_step(model, 1)
    finally:
        torch.use_deterministic_algorithms(before)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert all(g.abs().sum() > 0 for g in first)  # every layer learns, the decoder included


def test_input_checks() -> None:
    model = build_model("deconvnet", width=TINY)
    assert model.input_size == (224, 224)
    with pytest.raises(SkipsegError, match="input of 225x224 pixels"):
        model.eval()(torch.zeros(1, 3, 225, 224))
    with pytest.raises(SkipsegError, match="batches of at least 2"):
        model.train()(torch.zeros(1, 3, 224, 224))
    taps = model.eval().backbone(torch.zeros(1, 3, 224, 224))
    pools = ["pool1", "pool2", "pool3", "pool4", "pool5"]
    assert list(taps) == [tap for p in pools for tap in (p, f"{p}_switches")] + ["fc7"]
    assert taps["fc7"].shape == (1, scaled(4096, TINY), 1, 1)
    for pool in pools:
        switches = taps[f"{pool}_switches"]
        assert switches.dtype == torch.int64 and switches.shape == taps[pool].shape


def test_channels_last_and_autocast() -> None:
    torch.manual_seed(0)
    model = build_model("deconvnet", width=TINY, num_classes=4).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        plain = model(x)
        model = model.to(memory_format=torch.channels_last)
        last = model(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(x.contiguous(memory_format=torch.channels_last))
    assert plain.shape == last.shape == half.shape == (2, 4, 224, 224)
    assert torch.allclose(plain, last, atol=1e-4, rtol=1e-4)
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()
    assert (half.float().argmax(1) == plain.argmax(1)).float().mean() > 0.8


def _tiny_torchvision_vgg16_bn() -> nn.Module:
    """torchvision's VGG class (same keys and forward) at width 1/32; the full-size classifier it
    builds is made on the meta device and replaced, which keeps this fast."""
    cfg = [v if v == "M" else scaled(v, TINY) for v in VGG16_CFG]
    with torch.device("meta"):
        model = torchvision.models.VGG(nn.Sequential(), num_classes=1000, init_weights=False)
    model.features = make_layers(cfg, batch_norm=True)
    c5, cfc = scaled(512, TINY), scaled(4096, TINY)
    model.classifier[0], model.classifier[3] = nn.Linear(c5 * 7 * 7, cfc), nn.Linear(cfc, cfc)
    model.classifier[6] = nn.Linear(cfc, 1000)
    with torch.no_grad():  # BN statistics that are not the identity, as trained ones are not
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 2.0), m.bias.uniform_(0, 0.1)
    return model.eval()


def test_weights_file_conv_part_and_fc_surgery(tmp_path) -> None:
    torch.manual_seed(0)
    reference = _tiny_torchvision_vgg16_bn()
    torch.save(reference.state_dict(), tmp_path / "vgg16_bn.pth")
    model = build_model("deconvnet", width=TINY, weights=str(tmp_path / "vgg16_bn.pth")).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        taps = model.backbone(x)
        fc7 = reference.classifier[:5](torch.flatten(reference.avgpool(reference.features(x)), 1))
        assert model(x).shape == (2, 21, 224, 224)
    assert torch.allclose(taps["pool5"], reference.features(x), atol=1e-5)
    # bn6/bn7 start as the identity (up to eps), so fc7 is torchvision's fc7 output
    assert torch.allclose(taps["fc7"].flatten(1), fc7, rtol=1e-4, atol=1e-4)
    with pytest.raises(SkipsegError, match=r"features\.0\.weight has shape"):
        build_model("deconvnet", width=1 / 16, weights=str(tmp_path / "vgg16_bn.pth"))



def test_pretrained_imagenet_bn_is_torchvisions_vgg16_bn(hub) -> None:
    path = model_init.hub_cache_path("VGG16_BN_Weights.IMAGENET1K_V1")
    with torch.device("meta"), pytest.raises(SkipsegError, match=str(path.name)):
        build_model("deconvnet", pretrained="imagenet_bn")  # offline and not cached: names the file
    hub.mkdir(parents=True, exist_ok=True)
    with torch.device("meta"):
        torch.save(torchvision.models.vgg16_bn().state_dict(), path)  # meta tensors: a tiny file
        model = build_model("deconvnet", pretrained="imagenet_bn")
    assert model.backbone.fc6.weight.shape == (4096, 512, 7, 7)
    assert model.backbone.fc7.weight.shape == (4096, 4096, 1, 1)
    with pytest.raises(SkipsegError, match="width=1.0"):
        build_model("deconvnet", width=0.5, pretrained="imagenet")


def test_pretrained_imagenet_is_the_papers_vgg16_with_identity_batch_norm(monkeypatch) -> None:
    """`imagenet` asks for plain VGG16 (`imagenet_bn` for VGG16-BN) and loads its i-th conv into the
    i-th conv, every batch norm left as the identity."""
    asked = []

    def fake(name, progress=True):
        asked.append(name)
        with torch.device("meta"):
            return (torchvision.models.vgg16() if name.startswith("VGG16_Weights") else torchvision.models.vgg16_bn()).state_dict()

    monkeypatch.setattr(model_init, "imagenet_state_dict", fake)
    with torch.device("meta"):
        build_model("deconvnet", pretrained="imagenet")
        build_model("deconvnet", pretrained="imagenet_bn")
    assert asked == ["VGG16_Weights.IMAGENET1K_V1", "VGG16_BN_Weights.IMAGENET1K_V1"]
    torch.manual_seed(0)  # the mapping itself, at a tiny width
    model = build_model("deconvnet", num_classes=3, width=1 / 16, input_size=32).eval()
    vgg = vgg16_classifier(batch_norm=False, width=1 / 16)
    backbone = model.backbone
    state = model_init.torchvision_to_backbone(backbone, model_init.plain_vgg_into_batch_norm(backbone, vgg.state_dict()))
    model_init.load_exactly(backbone, state, "vgg16 (test)", backbone.torchvision_extra)
    features = model.backbone.features
    convs = [layer for layer in features if isinstance(layer, nn.Conv2d)]
    plain = [layer for layer in vgg.features if isinstance(layer, nn.Conv2d)]
    assert len(convs) == len(plain) == 13
    for mine, theirs in zip(convs, plain):
        assert torch.equal(mine.weight, theirs.weight) and torch.equal(mine.bias, theirs.bias)
    for bn in (layer for layer in features if isinstance(layer, nn.BatchNorm2d)):
        assert bn.weight.eq(1).all() and not bn.bias.any() and not bn.running_mean.any() and bn.running_var.eq(1).all()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():  # the encoder computes VGG16's conv1_1 … pool1 (batch norm: identity up to eps)
        assert torch.allclose(features[:7](x)[0], vgg.features[:5](x), atol=1e-4)
    with pytest.raises(SkipsegError, match="'imagenet_bn' \\(deconvnet"):
        build_model("fcn32s", width=1 / 16, pretrained="imagenet_bn")


def test_init_from_a_trained_deconvnet(tmp_path) -> None:
    torch.manual_seed(3)
    trained = build_model("deconvnet", width=TINY, num_classes=4)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))
    save_checkpoint(tmp_path / "run.pt", {"model": trained.state_dict(), "config": {}})
    copy = build_model("deconvnet", width=TINY, num_classes=4, init_from=str(tmp_path / "run.pt"))
    assert all(torch.equal(a, b) for a, b in zip(copy.state_dict().values(), trained.state_dict().values()))


@pytest.mark.parametrize("size", [32, 64, 96])
def test_cpu_input_sizes_scale_fc6_and_deconv_fc6(size) -> None:
    torch.manual_seed(0)
    model = build_model("deconvnet", width=TINY, num_classes=3, input_size=size)
    kernel = size // 32
    assert model.input_size == (size, size)
    assert model.backbone.fc6.kernel_size == (kernel, kernel) == model.decoder.deconv_fc6[0].kernel_size
    out = model.train()(torch.randn(2, 3, size, size))
    assert out.shape == (2, 3, size, size)
    info = describe_model("deconvnet", size=(size, size), width=TINY, input_size=size)
    rows = {row["name"]: row["shape"] for row in info["layers"]}
    assert rows["fc6"][1:] == [1, 1] and rows["deconv-fc6"][1:] == [kernel, kernel] and rows["output"] == [21, size, size]
    with pytest.raises(SkipsegError, match=f"takes exactly {size}x{size}"):
        model.eval()(torch.zeros(1, 3, size + 32, size + 32))


def test_input_size_must_be_a_multiple_of_32(tmp_path) -> None:
    for bad in (0, 100, 16):
        with pytest.raises(SkipsegError, match="input_size must be a multiple of 32"):
            build_model("deconvnet", width=TINY, input_size=bad)
    with pytest.raises(SkipsegError, match="vgg.pth: weights file not found"):  # any multiple of 32 takes weights
        build_model("deconvnet", width=TINY, input_size=64, weights=str(tmp_path / "vgg.pth"))
    assert main(["models", "describe", "deconvnet", "width=0.0625", "input_size=64", "--size", "64", "64"]) == 0


@pytest.mark.parametrize("width", [TINY, 0.125])
def test_initial_logits_are_not_collapsed_to_zero(width) -> None:
    """The scoring conv starts at a scale where the logits differ between classes from the first
    step: what lets a narrow decoder start learning (a tiny score init keeps them near 0)."""
    torch.manual_seed(0)
    model = build_model("deconvnet", num_classes=5, width=width, input_size=64).train()
    with torch.no_grad():
        spread = float(model(torch.randn(4, 3, 64, 64)).std(dim=1).mean())  # over classes, per pixel
    assert 0.1 < spread < 3.0


def test_decoder_width_widens_the_decoder_but_what_feeds_an_unpooling() -> None:
    model = build_model("deconvnet", num_classes=5, width=1 / 8, input_size=64, decoder_width=1 / 2)
    layers = {name: layer for name, layer in model.layers()}
    widths = {name: layers[name].out_channels for name in ("deconv5-1", "deconv5-3", "deconv4-2", "deconv4-3",
                                                           "deconv2-1", "deconv2-2", "deconv1-1", "deconv1-2")}
    # deconv5-3 .. deconv2-2 feed unpool4 .. unpool1: their pools' channels at width 1/8 (64, 32, 16, 8)
    assert widths == {"deconv5-1": 256, "deconv5-3": 64, "deconv4-2": 256, "deconv4-3": 32,
                      "deconv2-1": 64, "deconv2-2": 8, "deconv1-1": 32, "deconv1-2": 32}
    assert layers["deconv-fc6"].out_channels == 64 and layers["output"].in_channels == 32
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5, 64, 64)
    same = build_model("deconvnet", num_classes=5, width=1 / 8, input_size=64, decoder_width=1 / 8)
    plain = build_model("deconvnet", num_classes=5, width=1 / 8, input_size=64)
    assert {k: v.shape for k, v in same.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    with pytest.raises(SkipsegError, match="decoder_width"):
        build_model("deconvnet", decoder_width=0)


def test_mirror_init_starts_each_deconvolution_as_its_encoder_layers_transpose(tmp_path) -> None:
    torch.manual_seed(0)
    classifier = vgg16_classifier(batch_norm=True, width=TINY, num_classes=20)
    torch.save(classifier.state_dict(), tmp_path / "vgg.pt")
    model = build_model("deconvnet", num_classes=3, width=TINY, input_size=64, weights=str(tmp_path / "vgg.pt"),
                        decoder_init="mirror")
    layers = {name: layer for name, layer in model.layers()}
    pairs = {(d, c) for d, c in model.mirrored_layers()}
    expected = [("deconv-fc6", "fc6"), ("deconv5-1", "conv5-3"), ("deconv4-3", "conv4-1"), ("deconv1-1", "conv1-2")]
    for deconv, conv in expected:
        assert (layers[deconv], layers[conv]) in pairs
        assert torch.equal(layers[deconv].weight, layers[conv].weight)
    assert len(pairs) == 13  # every deconvolution but deconv1-2 (conv1-1 has 3 inputs)
    # the transposed conv computes the adjoint of its mirror: <conv(x), y> = <x, deconv(y)> (biases aside)
    conv, deconv = layers["conv4-1"], layers["deconv4-3"]
    x, y = torch.randn(1, conv.in_channels, 8, 8), torch.randn(1, conv.out_channels, 8, 8)
    lhs = (F.conv2d(x, conv.weight, padding=1) * y).sum()
    rhs = (x * F.conv_transpose2d(y, deconv.weight, padding=1)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=1e-4)
