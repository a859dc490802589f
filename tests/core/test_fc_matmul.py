"""fc6 / deconv-fc6 as matrix products: the same outputs and gradients as PyTorch's convolutions."""
import copy

import pytest
import torch
from torch import nn

from skipseg.config import TrainConfig
from skipseg.engine.optim import build_optimizer
from skipseg.core import fc_matmul
from skipseg.core.fc_matmul import FCConv2d, FCConvTranspose2d, _matmul_output_size, fully_connected_as_matmul


def _twins(fast_cls, plain_cls, cin, cout, kernel, padding):
    torch.manual_seed(0)
    fast = fast_cls(cin, cout, kernel, padding=padding)
    plain = plain_cls(cin, cout, kernel, padding=padding)
    plain.load_state_dict(fast.state_dict())  # same parameters, same keys: checkpoints are unchanged
    return fast, plain


def _compare(fast, plain, shape, channels_last=False):
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fast(xa), plain(xb)
    assert ya.shape == yb.shape
    torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-4)
    grad = torch.randn_like(yb)
    ya.backward(grad)
    yb.backward(grad)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(fast.bias.grad, plain.bias.grad, rtol=1e-4, atol=1e-3)
    return ya


@pytest.mark.parametrize("kernel,padding,shape", [
    (7, 3, (2, 6, 8, 9)),     # FCN's fc6: 'same' padding on a map barely larger than the kernel
    (7, 3, (8, 6, 2, 2)),     # FCN's fc6 at 64 px: a 2x2 map, only the central 3x3 taps reach it
    (7, 3, (2, 6, 1, 3)),     # a 1x3 map: 1x5 live taps
    (6, 3, (2, 6, 2, 5)),     # an even kernel: the cut is the same on both sides
    (7, 0, (3, 6, 7, 7)),     # DeconvNet's fc6: one output position
    (5, 2, (1, 6, 45, 61)),   # too many positions: the ordinary convolution runs
])
def test_fc_conv_matches_conv2d(kernel, padding, shape):
    fast, plain = _twins(FCConv2d, nn.Conv2d, 6, 5, kernel, padding)
    _compare(fast, plain, shape)


def test_live_taps_cut_what_only_padding_reaches():
    weight = torch.randn(5, 6, 7, 7)
    cut, padding = fc_matmul.live_taps(weight, (3, 3), (2, 2))
    assert padding == (1, 1) and torch.equal(cut, weight[:, :, 2:5, 2:5])
    same, padding = fc_matmul.live_taps(weight, (3, 3), (4, 8))  # every tap reaches the map
    assert padding == (3, 3) and same is weight


@pytest.mark.parametrize("kernel,padding,shape", [
    (7, 0, (3, 6, 1, 1)),     # DeconvNet's deconv-fc6: 1x1 -> 7x7
    (3, 1, (2, 6, 5, 7)),     # padded, several positions: fold (col2im) path
    (3, 1, (1, 6, 45, 61)),   # too many positions: the ordinary transposed convolution
])
def test_fc_conv_transpose_matches_conv_transpose2d(kernel, padding, shape):
    fast, plain = _twins(FCConvTranspose2d, nn.ConvTranspose2d, 6, 5, kernel, padding)
    _compare(fast, plain, shape)


def test_channels_last_input_gives_channels_last_output():
    fast, plain = _twins(FCConv2d, nn.Conv2d, 6, 5, 7, 3)
    out = _compare(fast, plain, (2, 6, 8, 8), channels_last=True)
    assert out.is_contiguous(memory_format=torch.channels_last)
    fast_t, plain_t = _twins(FCConvTranspose2d, nn.ConvTranspose2d, 6, 5, 3, 1)
    out = _compare(fast_t, plain_t, (2, 6, 4, 4), channels_last=True)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_matmul_path_is_taken_on_small_maps_only():
    fast = FCConv2d(4, 4, 7, padding=3)
    assert _matmul_output_size(fast, torch.randn(1, 4, 8, 8), transposed=False) == (8, 8)
    # 2048 positions: oneDNN is as fast there
    assert _matmul_output_size(fast, torch.randn(8, 4, 16, 16), transposed=False) is None


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_optimizer_is_fused_on_cpu_and_steps_like_the_plain_one(name):
    torch.manual_seed(0)
    fused_model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    plain_model = copy.deepcopy(fused_model)
    cfg = TrainConfig(optimizer=name, lr=0.1)
    fused = build_optimizer(fused_model, cfg)
    assert fused.defaults["fused"] is True
    plain = (torch.optim.SGD(plain_model.parameters(), lr=0.1, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
             if name == "sgd" else torch.optim.Adam(plain_model.parameters(), lr=0.1, weight_decay=cfg.weight_decay))
    x = torch.randn(2, 3, 9, 11)
    for _ in range(3):
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, options, expected", [
    ("fcn8s", dict(width=0.125), {"backbone.fc6": FCConv2d, "backbone.fc7": FCConv2d}),
    ("deconvnet", dict(width=0.125, input_size=64), {"backbone.fc6": FCConv2d, "decoder.deconv_fc6.0": FCConvTranspose2d}),
])
def test_runtime_computes_exactly_the_papers_fully_connected_layers_as_matmuls(name, options, expected, monkeypatch):
    """The model is built with plain convolutions; `prepare_model` swaps the layers it lists in
    `fully_connected` for their matmul twins, holding the same parameters (state_dict unchanged)."""
    from skipseg.core.runtime import make_runtime
    from skipseg.models import build_model

    torch.manual_seed(0)
    model = build_model(name, num_classes=5, **options).eval()
    assert not any(isinstance(m, (FCConv2d, FCConvTranspose2d)) for m in model.modules())
    plain = copy.deepcopy(model)
    before = {k: v.data_ptr() for k, v in model.state_dict().items()}
    prepared = make_runtime("cpu", "fp32").prepare_model(model)
    swapped = {n: type(m) for n, m in prepared.named_modules() if isinstance(m, (FCConv2d, FCConvTranspose2d))}
    assert swapped == expected
    assert {k: v.data_ptr() for k, v in prepared.state_dict().items()} == before  # the same tensors
    assert fully_connected_as_matmul(prepared) is prepared  # a second call changes nothing
    x = torch.randn(2, 3, 64, 64)
    ran = []  # the forward really goes through the matmul path of exactly those layers
    monkeypatch.setattr(fc_matmul, "_matmul_output_size",
                        lambda conv, *args, **kwargs: ran.append(conv) or _matmul_output_size(conv, *args, **kwargs))
    with torch.no_grad():
        torch.testing.assert_close(prepared(x), plain(x), rtol=1e-4, atol=1e-4)
    assert [id(conv) for conv in ran] == [id(prepared.get_submodule(path)) for path in expected]
