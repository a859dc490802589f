"""FCN models: exact output size, pixel alignment, bilinear upsampling, parameter counts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skipseg.errors import SkipsegError
from skipseg.models.registry import build_model, list_models
from skipseg.models.upsample import BilinearUpsample, bilinear_kernel

TINY = 1 / 16
VGG_FCNS = ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce")


def sizes_for(model: nn.Module) -> list[tuple[int, int]]:
    m = model.backbone.min_size
    return [(max(45, m), 61), (max(33, m), 97), (64, 64), (m, m), (m, m + 7), (m + 6, m)]


@pytest.mark.parametrize("name", [name for name in list_models() if name.startswith("fcn")])
def test_output_size_equals_input_size(name: str) -> None:
    model = build_model(name, width=TINY, num_classes=3).eval()
    with torch.inference_mode():
        for h, w in sizes_for(model):
            assert model(torch.randn(2, 3, h, w)).shape == (2, 3, h, w), (name, h, w)


@pytest.mark.parametrize("name", VGG_FCNS)
def test_output_size_with_original_padding(name: str) -> None:
    model = build_model(name, width=TINY, original_padding=True).eval()
    with torch.inference_mode():
        for h, w in [(45, 61), (33, 97), (64, 64), (1, 1), (1, 30)]:
            assert model(torch.randn(1, 3, h, w)).shape == (1, 21, h, w)


def test_minimum_sizes() -> None:
    expected = {"fcn32s": 1, "fcn16s": 1, "fcn8s": 1, "fcn8s_atonce": 1, "fcn32s_alexnet": 35, "fcn32s_googlenet": 15}
    assert set(expected) <= set(list_models())
    for name, minimum in expected.items():
        model = build_model(name, width=TINY).eval()
        assert model.backbone.min_size == minimum
        with torch.inference_mode():
            model(torch.randn(1, 3, minimum, minimum))
            if minimum > 1:
                with pytest.raises(SkipsegError, match=f"minimum size is {minimum}x{minimum}"):
                    model(torch.randn(1, 3, minimum - 1, 100))
                # the layers themselves refuse it too: the minimum is not over-cautious
                layers = [layer for _, stage in model.backbone._stages for layer in stage]
                with pytest.raises(RuntimeError):
                    nn.Sequential(*layers)(torch.randn(1, 3, minimum - 1, 100))


def test_bilinear_kernel_values() -> None:
    ramp = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.allclose(bilinear_kernel(2), ramp[:, None] * ramp[None, :])
    k = bilinear_kernel(3)  # odd factor: 5 taps centred on the middle one
    assert k.shape == (5, 5) and k[2, 2] == 1 and torch.isclose(k[2, 0], torch.tensor(1 / 3))


def test_x2_transposed_conv_reproduces_bilinear_on_a_ramp() -> None:
    h, w = 8, 11
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    image = (0.7 * y - 1.3 * x + 2.0)[None, None]  # a linear ramp: bilinear interpolation is exact on it
    up = BilinearUpsample(1, 2, edge_pad=0)
    with torch.no_grad():
        out = up(image)  # [1, 1, (h - 1) * 2 + 4, ...]
    assert out.shape[-2:] == (2 * h + 2, 2 * w + 2)
    # Output index k lies at input coordinate (k - 1.5) / 2; a stride-2 grid with align_corners=False
    # has its output i at (i + 0.5) / 2 - 0.5, so i = k - 1. Away from the zero-padded border
    # (the outer 3 output pixels see missing neighbours) both equal the ramp at that coordinate.
    coord_y = (torch.arange(out.shape[-2]) - 1.5) / 2
    coord_x = (torch.arange(out.shape[-1]) - 1.5) / 2
    expected = 0.7 * coord_y[:, None] - 1.3 * coord_x[None, :] + 2.0
    interior = (slice(3, -3), slice(3, -3))
    assert torch.allclose(out[0, 0][interior], expected[interior], atol=1e-5)
    reference = F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.allclose(out[0, 0, 1:-1, 1:-1][interior], reference[0, 0][interior], atol=1e-5)


def test_edge_padded_upsampling_equals_interpolate_everywhere() -> None:
    x = torch.randn(2, 3, 5, 7)
    for factor in (2, 8, 32):
        up = BilinearUpsample(3, factor)  # one replicated cell on each side, output index i + 3f/2
        start = 3 * factor // 2
        with torch.no_grad():
            out = up(x)[..., start : start + 5 * factor, start : start + 7 * factor]
        reference = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
        assert torch.allclose(out, reference, atol=1e-5), factor


def test_fcn32s_output_is_bilinear_interpolation_of_its_scores() -> None:
    """Alignment: score_fr cell j is centred on pixel 32 j + 15.5, where align_corners=False puts it."""
    torch.manual_seed(0)
    model = build_model("fcn32s", width=TINY).eval()
    nn.init.normal_(model.head.score_fr.weight)
    scores = {}
    model.head.score_fr.register_forward_hook(lambda mod, args, out: scores.__setitem__("fr", out))
    with torch.inference_mode():
        for h, w in [(45, 61), (64, 64), (1, 1), (100, 33)]:
            out = model(torch.randn(1, 3, h, w))
            reference = F.interpolate(scores["fr"], scale_factor=32, mode="bilinear", align_corners=False)
            assert torch.allclose(out, reference[..., :h, :w], atol=1e-5)


def _symmetric_random(model: nn.Module) -> nn.Module:
    """Random, mirror-symmetric conv kernels (the zero score layers too): the network then commutes
    with flipping the input exactly when every crop puts each prediction on its own pixel."""
    torch.manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                weight = torch.randn_like(module.weight)
                weight = weight + weight.flip(-1)
                module.weight.copy_(weight + weight.flip(-2))
                nn.init.normal_(module.bias)
    return model.eval()


# Sizes for which every pooling window is whole (so pooling itself is mirror-symmetric): multiples
# of 32, and with the original 100-pixel padding, sizes with (size + 198) a multiple of 32.
@pytest.mark.parametrize("original_padding,sizes", [(False, [(64, 96), (32, 128)]), (True, [(58, 90), (26, 122)])])
@pytest.mark.parametrize("name", ("fcn32s", "fcn16s", "fcn8s"))
def test_predictions_are_centred_mirror_symmetry(name: str, original_padding: bool, sizes) -> None:
    model = _symmetric_random(build_model(name, width=TINY, original_padding=original_padding))
    with torch.inference_mode():
        for h, w in sizes:
            x = torch.randn(1, 3, h, w)
            out = model(x)
            scale = out.abs().max()
            for dim in (-1, -2):
                assert torch.allclose(model(x.flip(dim)).flip(dim), out, atol=1e-5 * scale)
        # the test has teeth: a crop one pixel off breaks the symmetry
        model.head.crop_start += 1
        x = torch.randn(1, 3, *sizes[0])
        assert not torch.allclose(model(x.flip(-1)).flip(-1), model(x), atol=1e-3 * scale)


def test_original_padding_reproduces_reference_crop_offsets() -> None:
    offsets = {"fcn32s": (19,), "fcn16s": (-5, 27), "fcn8s": (-5, -9, 31), "fcn8s_atonce": (-5, -9, 31)}
    for name, expected in offsets.items():
        model = build_model(name, width=TINY, original_padding=True)
        assert model.head.crop_offsets == expected  # negative: the skip's scores are cropped (score_pool4c)
        assert model.backbone.features[0].padding == (100, 100) and model.backbone.fc6.padding == (0, 0)
    default = build_model("fcn8s", width=TINY)
    assert default.backbone.features[0].padding == (1, 1) and default.backbone.fc6.padding == (3, 3)


def test_head_layers_and_initialisation() -> None:
    model = build_model("fcn8s", width=TINY, num_classes=5)
    assert model.num_classes == 5
    for name in ("score_fr", "score_pool4", "score_pool3"):
        conv = getattr(model.head, name)
        assert conv.kernel_size == (1, 1) and conv.out_channels == 5
        assert not conv.weight.any() and not conv.bias.any()
    for name, factor in (("upscore2", 2), ("upscore_pool4", 2), ("upscore8", 8)):
        up = getattr(model.head, name)
        assert up.stride == (factor, factor) and not up.weight.requires_grad
        for c in range(5):
            assert torch.equal(up.weight[c, c], bilinear_kernel(factor))
        assert up.weight.sum() == 5 * bilinear_kernel(factor).sum()  # zero off the diagonal
    backbone = model.backbone
    assert backbone.fc6.kernel_size == (7, 7) and backbone.fc7.kernel_size == (1, 1)
    assert isinstance(backbone.drop6, nn.Dropout) and isinstance(backbone.drop7, nn.Dropout)
    learnable = build_model("fcn16s", width=TINY, learnable_upsampling=True)
    assert learnable.head.upscore2.weight.requires_grad and learnable.head.upscore16.weight.requires_grad


def test_at_once_scales_skips_before_scoring() -> None:
    model = build_model("fcn8s_atonce", width=TINY).eval()
    seen = {}
    model.backbone.register_forward_hook(lambda mod, args, out: seen.__setitem__("taps", out))
    for tap in ("pool4", "pool3"):
        hook = lambda mod, args, tap=tap: seen.__setitem__(tap, args[0])  # noqa: E731
        getattr(model.head, f"score_{tap}").register_forward_pre_hook(hook)
    with torch.inference_mode():
        model(torch.randn(1, 3, 64, 80))
    assert torch.allclose(seen["pool4"], seen["taps"]["pool4"] * 0.01)
    assert torch.allclose(seen["pool3"], seen["taps"]["pool3"] * 0.0001)


@pytest.mark.parametrize("name", [name for name in list_models() if name.startswith("fcn")])
def test_channels_last_and_bf16_autocast(name: str) -> None:
    model = build_model(name, width=TINY).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 47, 53).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)  # training mode: dropout, batch norm statistics
    assert out.shape == (2, 21, 47, 53) and out.dtype == torch.bfloat16
    out.float().mean().backward()
    assert model.head.score_fr.weight.grad is not None


def _vgg16_conv_params() -> int:
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    total, cin = 0, 3
    for v in cfg:
        if v != "M":
            total += 3 * 3 * cin * v + v  # k*k*cin*cout + cout
            cin = v
    return total


def test_parameter_counts_at_width_one() -> None:
    c = 21
    conv = _vgg16_conv_params()
    assert conv == 14_714_688  # torchvision's vgg16().features
    fc6 = 7 * 7 * 512 * 4096 + 4096
    fc7 = 1 * 1 * 4096 * 4096 + 4096
    score_fr = 4096 * c + c
    score_pool4 = 512 * c + c
    score_pool3 = 256 * c + c

    def up(factor):  # C x C transposed conv, kernel 2f, no bias
        return c * c * (2 * factor) ** 2

    expected = {
        "fcn32s": conv + fc6 + fc7 + score_fr + up(32),
        "fcn16s": conv + fc6 + fc7 + score_fr + score_pool4 + up(2) + up(16),
        "fcn8s": conv + fc6 + fc7 + score_fr + score_pool4 + score_pool3 + up(2) + up(2) + up(8),
    }
    expected["fcn8s_atonce"] = expected["fcn8s"]
    with torch.device("meta"):  # shapes only: no 500 MB of float32 per model
        for name, count in expected.items():
            model = build_model(name)
            assert sum(p.numel() for p in model.parameters()) == count, name
    assert expected["fcn8s"] == 134_489_759  # "about 134.5 M"
