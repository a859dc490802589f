"""A run-time substitution for speed: the papers' fully connected layers (fc6/fc7 of FCN, DeconvNet's
fc6 and deconv-fc6), which the models build as ordinary convolutions, computed as matrix products on
the small maps they see in training on a CPU.

At training sizes fc6 runs on maps barely larger than its 7×7 kernel (8×8 for a 256-pixel crop;
DeconvNet's is 7×7 on a 7×7 map, one output position), where oneDNN's direct convolution reaches a
fraction of the matmul peak; the same product as one matrix multiplication over unfolded patches
(and deconv-fc6 as matmul + fold) does not have that problem. On larger maps the direct kernel
catches up, so the matmul path is taken only for small maps on the CPU; GPUs, ONNX export and large
maps use the ordinary convolution. `Runtime.prepare_model` applies it to the layers a model lists in
`fully_connected`, sharing their parameters: weights, checkpoints and state_dict keys are unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Output positions (batch x height x width) up to which the matmul path is the faster one on a CPU;
# beyond it the two meet (bench/substitutions.py times both).
MATMUL_MAX_POSITIONS = 512


def _tracing() -> bool:
    """ONNX export, torch.export and torch.compile see the ordinary convolution (one graph op)."""
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling() or torch.compiler.is_exporting()


class FCConv2d(nn.Conv2d):
    """`nn.Conv2d` (stride 1, no dilation or groups) computed as unfold + matmul on small CPU maps."""

    def forward(self, x: Tensor) -> Tensor:
        size = _matmul_output_size(self, x, transposed=False)
        if size is None:
            return super().forward(x)
        weight, padding = live_taps(self.weight, self.padding, x.shape[-2:])
        cols = F.unfold(x, weight.shape[-2:], padding=padding)  # [N, C*kh'*kw', oh*ow]
        out = torch.matmul(weight.reshape(self.out_channels, -1), cols)  # [N, O, oh*ow]
        return _finish(self, out.view(len(x), self.out_channels, *size), x)  # [N, O, oh, ow]


def live_taps(weight: Tensor, padding: tuple[int, int], size: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
    """`weight` `[O, C, kh, kw]` cut to the taps that reach the `size` input, and the padding that
    keeps the output's size and cells: a kernel wider than the map it slides over (FCN's 7×7 fc6 with
    'same' padding on the 2×2 pool5 of a 64-px image) multiplies only zero padding with its outer
    taps, so dropping them (c = k - p - h per side) changes no output and no gradient but skips work."""
    (kh, kw), (ph, pw), (h, w) = weight.shape[-2:], padding, size
    ch, cw = max(0, kh - ph - h), max(0, kw - pw - w)
    if ch or cw:
        weight = weight[:, :, ch:kh - ch, cw:kw - cw]
    return weight, (ph - ch, pw - cw)


class FCConvTranspose2d(nn.ConvTranspose2d):
    """`nn.ConvTranspose2d` (stride 1) computed as matmul + fold (col2im) on small CPU maps."""

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        size = None if output_size is not None or self.output_padding != (0, 0) else \
            _matmul_output_size(self, x, transposed=True)
        if size is None:
            return super().forward(x, output_size)
        n, c, h, w = x.shape
        # weight [C_in, C_out, kh, kw]: every input position spreads C_out*kh*kw values.
        cols = torch.matmul(self.weight.flatten(1).t(), x.reshape(n, c, h * w))  # [N, C_out*kh*kw, h*w]
        if (h, w) == (1, 1) and self.padding == (0, 0):  # one position: the columns are the output
            out = cols.view(n, self.out_channels, *size)
        else:
            out = F.fold(cols, size, self.kernel_size, padding=self.padding)  # [N, C_out, oh, ow]
        return _finish(self, out, x)


def _matmul_output_size(conv: nn.Conv2d | nn.ConvTranspose2d, x: Tensor, transposed: bool) -> tuple[int, int] | None:
    """(oh, ow) when the matmul path applies: a plain stride-1 layer, a 4-D CPU input outside any
    tracing, a non-empty output and few positions on the side the product runs over; else None."""
    if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros" \
            or isinstance(conv.padding, str) or x.device.type != "cpu" or x.dim() != 4 or _tracing():
        return None
    n, _, h, w = x.shape
    (kh, kw), (ph, pw) = conv.kernel_size, conv.padding
    if transposed:
        oh, ow = h + kh - 1 - 2 * ph, w + kw - 1 - 2 * pw
    else:
        oh, ow = h - kh + 1 + 2 * ph, w - kw + 1 + 2 * pw
    positions = n * (h * w if transposed else oh * ow)  # the product runs over input / output positions
    return (oh, ow) if oh > 0 and ow > 0 and positions <= MATMUL_MAX_POSITIONS else None


def _finish(conv: nn.Conv2d | nn.ConvTranspose2d, out: Tensor, x: Tensor) -> Tensor:
    """Add the bias and give the output the input's memory layout."""
    if conv.bias is not None:
        out = out + conv.bias[:, None, None].to(out.dtype)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)  # keep the caller's layout
    return out


def fully_connected_as_matmul(model: nn.Module) -> nn.Module:
    """`model` with each layer named in `model.fully_connected` (module paths, e.g. "backbone.fc6")
    turned into its matmul twin in place: the same object, parameters and hooks, so every reference
    to it (a backbone's list of stages too) computes the matmul form. Other models are returned as
    they are."""
    for path in getattr(model, "fully_connected", ()):
        layer = model.get_submodule(path)
        twin_class = _TWINS.get(type(layer))
        if twin_class is not None:  # None: already substituted (prepare_model called twice)
            layer.__class__ = twin_class  # a subclass without state of its own: only forward changes
    return model


_TWINS: dict[type, type] = {nn.Conv2d: FCConv2d, nn.ConvTranspose2d: FCConvTranspose2d}
