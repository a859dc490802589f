"""Fully connected layers cast as convolutions (fc6/fc7 of FCN and DeconvNet, DeconvNet's
deconv-fc6), computed as matrix products on the small maps they see in training.

VGG's fc6 as a convolution is 7x7 with 512 -> 4096 channels, and at training sizes it runs on maps
barely larger than its kernel (8x8 for a 256-pixel crop). oneDNN's direct convolution reaches only
~40 % of the matmul peak there (measured on a 2-core AVX2 CPU: 28 vs 66 GFLOP/s forward, 20 vs 66
forward + backward, batch 1, one thread), and fc6 is then ~40 % of FCN-8s's time. The same
product as one matrix multiplication over unfolded patches runs at ~52 / 39 GFLOP/s, i.e. 1.9x
faster per step for that layer. DeconvNet's fc6 (7x7 on a 7x7 map, one output position) and its
mirror deconv-fc6 (1x1 -> 7x7) are worse: 3.3 and 2.8 GFLOP/s forward at batch 8 against 22 and
23 as matmuls (3.5-4.6x faster forward + backward). On larger maps the direct kernel catches up
(equal at 512 output positions), so the matmul path is taken only for small maps on the CPU; GPUs,
ONNX export and large maps use the ordinary convolution. The parameters are those of the nn
layers, so weights and checkpoints are unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Output positions (batch x height x width) up to which the matmul path wins on CPU (measured: 1.9x at
# 64, 1.35x at 256, 1.1x at 484, 1.0x at 512).
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
        cols = F.unfold(x, self.kernel_size, padding=self.padding)  # [N, C*kh*kw, oh*ow]
        out = torch.matmul(self.weight.flatten(1), cols)  # [N, O, oh*ow]
        return _finish(self, out.view(len(x), self.out_channels, *size), x)  # [N, O, oh, ow]


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
