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
        if not self._use_matmul(x):
            return super().forward(x)
        n, _, h, w = x.shape
        kh, kw = self.kernel_size
        ph, pw = self.padding
        oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
        cols = F.unfold(x, self.kernel_size, padding=self.padding)  # [N, C*kh*kw, oh*ow]
        out = torch.matmul(self.weight.flatten(1), cols)  # [N, O, oh*ow]
        if self.bias is not None:
            out = out + self.bias[:, None].to(out.dtype)
        out = out.view(n, self.out_channels, oh, ow)  # [N, O, oh, ow]
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            out = out.contiguous(memory_format=torch.channels_last)  # keep the caller's layout
        return out

    def _use_matmul(self, x: Tensor) -> bool:
        return _plain(self) and _small_cpu_map(x, self.kernel_size, self.padding, transposed=False)


class FCConvTranspose2d(nn.ConvTranspose2d):
    """`nn.ConvTranspose2d` (stride 1) computed as matmul + fold (col2im) on small CPU maps."""

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if output_size is not None or self.output_padding != (0, 0) or not _plain(self) \
                or not _small_cpu_map(x, self.kernel_size, self.padding, transposed=True):
            return super().forward(x, output_size)
        n, c, h, w = x.shape
        kh, kw = self.kernel_size
        ph, pw = self.padding
        oh, ow = h + kh - 1 - 2 * ph, w + kw - 1 - 2 * pw
        # weight [C_in, C_out, kh, kw]: every input position spreads C_out*kh*kw values.
        cols = torch.matmul(self.weight.flatten(1).t(), x.reshape(n, c, h * w))  # [N, C_out*kh*kw, h*w]
        if (h, w) == (1, 1) and (ph, pw) == (0, 0):
            out = cols.view(n, self.out_channels, kh, kw)  # one position: the columns are the output
        else:
            out = F.fold(cols, (oh, ow), self.kernel_size, padding=self.padding)  # [N, C_out, oh, ow]
        if self.bias is not None:
            out = out + self.bias[:, None, None].to(out.dtype)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            out = out.contiguous(memory_format=torch.channels_last)
        return out


def _plain(conv: nn.Conv2d | nn.ConvTranspose2d) -> bool:
    return conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1 \
        and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def _small_cpu_map(x: Tensor, kernel: tuple[int, int], padding: tuple[int, int], transposed: bool) -> bool:
    """CPU, not traced, and few positions on the side the matrix product runs over."""
    if x.device.type != "cpu" or x.dim() != 4 or _tracing():
        return False
    n, _, h, w = x.shape
    if transposed:  # the product runs over the input positions
        return h + kernel[0] - 1 - 2 * padding[0] > 0 and n * h * w <= MATMUL_MAX_POSITIONS
    oh, ow = h + 2 * padding[0] - kernel[0] + 1, w + 2 * padding[1] - kernel[1] + 1
    return oh > 0 and ow > 0 and n * oh * ow <= MATMUL_MAX_POSITIONS
