"""Max pooling that records its switches, and the unpooling that puts values back where they came from.

DeconvNet's unpooling (Zeiler & Fergus) places each pooled activation at the position its maximum
came from and fills the rest of the window with zeros. PyTorch's `F.max_unpool2d` does this with a
scatter that has no deterministic implementation (`torch.use_deterministic_algorithms(True)` makes it
raise, on CPU too). For non-overlapping k×k/k windows the scatter can be written as a gather:
every output pixel reads its own window's value and switch (a broadcast of the pooled maps) and
keeps the value iff the switch names that pixel. That is elementwise, so forward and backward are
deterministic, it runs on the meta device, and it keeps the input's memory format (channels_last
in, channels_last out). It is faster than interleaving k² masked maps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def max_pool_with_switches(x: Tensor, kernel: int = 2) -> tuple[Tensor, Tensor]:
    """k×k/k max pooling (floor mode): `(pooled [N,C,H//k,W//k], switches)`, the switches being
    the flat index `y * W + x` of each maximum in its input plane, as `F.max_pool2d` returns them."""
    pooled, switches = F.max_pool2d(x, kernel, kernel, return_indices=True)
    return pooled, switches


def max_unpool(x: Tensor, switches: Tensor, output_size: tuple[int, int], kernel: int = 2) -> Tensor:
    """The inverse placement of `max_pool_with_switches`: `[N,C,h,w]` → `[N,C,H,W]`, zeros elsewhere.

    Equals `F.max_unpool2d(x, switches, kernel, kernel, output_size=...)` for switches produced by
    k×k/k pooling of a `[.., H, W]` input (each index lies in its own window), deterministically.
    Rows/columns that floor-mode pooling dropped (odd sizes) come back as zeros.
    """
    n, c, h, w = x.shape
    height, width = int(output_size[0]), int(output_size[1])
    if not (kernel * h <= height < kernel * (h + 1) and kernel * w <= width < kernel * (w + 1)):
        raise ValueError(f"unpooling a {h}x{w} map by {kernel} cannot give {height}x{width}")
    if switches.shape != x.shape:
        raise ValueError(f"switches of shape {tuple(switches.shape)} do not match values {tuple(x.shape)}")
    # Flat index of every output pixel of the covered region: [k h, k w].
    pos = torch.arange(height * width, device=x.device).view(height, width)[: kernel * h, : kernel * w]
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        # Work in NHWC so the result is channels_last without a layout change.
        def spread(t: Tensor) -> Tensor:  # [N, C, h, w] -> [N, k h, k w, C], each cell over its window
            t = t.permute(0, 2, 3, 1)[:, :, None, :, None, :]
            return t.expand(n, h, kernel, w, kernel, c).reshape(n, kernel * h, kernel * w, c)

        keep = spread(switches) == pos[None, :, :, None]
        out = torch.where(keep, spread(x), x.new_zeros(())).permute(0, 3, 1, 2)  # [N, C, k h, k w]
    else:
        def spread(t: Tensor) -> Tensor:  # [N, C, h, w] -> [N, C, k h, k w]
            t = t[:, :, :, None, :, None]
            return t.expand(n, c, h, kernel, w, kernel).reshape(n, c, kernel * h, kernel * w)

        out = torch.where(spread(switches) == pos, spread(x), x.new_zeros(()))  # [N, C, k h, k w]
    if (height, width) != (kernel * h, kernel * w):
        out = F.pad(out, (0, width - kernel * w, 0, height - kernel * h))
    return out


class SwitchPool(nn.MaxPool2d):
    """`nn.MaxPool2d(k, k)` whose forward returns `(pooled, switches)` (a `return_indices` pool).

    Being a MaxPool2d, the geometry walks of `geometry.py` read it like any other pool.
    """

    def __init__(self, kernel: int = 2) -> None:
        super().__init__(kernel, kernel, return_indices=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return max_pool_with_switches(x, int(self.kernel_size))


class Unpool(nn.Module):
    """Module form of `max_unpool` (no parameters): `forward(x, switches, output_size)`."""

    def __init__(self, kernel: int = 2) -> None:
        super().__init__()
        self.kernel = kernel

    def forward(self, x: Tensor, switches: Tensor, output_size: tuple[int, int]) -> Tensor:
        return max_unpool(x, switches, output_size, self.kernel)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel}, stride={self.kernel}"
