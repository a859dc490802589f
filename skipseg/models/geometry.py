"""Where a feature map's cells sit in the input image, and the smallest input a layer chain accepts.

A map on a `Grid(stride, offset)` has its cell `j` centred on input pixel `stride * j + offset`
(pixel centres at integer coordinates). A conv or pool with kernel k, stride s, padding p, dilation d
moves the centre of its cell 0 to `offset + stride * (d * (k - 1) / 2 - p)` and multiplies the stride
by s. 'Same' layers (3x3 pad 1, 7x7 pad 3, 1x1) leave the grid unchanged; a 2x2/2 pool gives the
"ideal" offset (stride - 1) / 2, the one `F.interpolate(..., align_corners=False)` assumes.

These two walks read the layers themselves, so a backbone never states its geometry by hand (and a
later backbone built from any torchvision model gets it the same way).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from torch import nn

_SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


@dataclass(frozen=True)
class Grid:
    """Cell `j` of a map on this grid is centred on input pixel `stride * j + offset`."""

    stride: float
    offset: float


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _layer_params(layer: nn.Module) -> tuple[int, int, int, int, bool]:
    k, s, p, d = (_pair(getattr(layer, a, 1)) for a in ("kernel_size", "stride", "padding", "dilation"))
    s = s if s[0] is not None else k
    if isinstance(p[0], str) or any(v[0] != v[1] for v in (k, s, p, d)):
        raise ValueError(f"{layer}: only square kernels with numeric symmetric padding are supported")
    return k[0], s[0], p[0], d[0], bool(getattr(layer, "ceil_mode", False))


def spatial_layers(modules: Iterable[nn.Module]) -> list[nn.Module]:
    """Convs and pools in execution order. Containers are walked child by child; for a multi-branch
    block (Inception) this is only right because every branch is a stride-1 'same' layer chain."""
    out: list[nn.Module] = []
    for module in modules:
        if isinstance(module, _SPATIAL):
            out.append(module)
        elif isinstance(module, (nn.ConvTranspose2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            raise ValueError(f"{module}: grid tracking does not support this layer type")
        else:
            out.extend(spatial_layers(module.children()))
    return out


def track_grid(modules: Iterable[nn.Module], grid: Grid = Grid(1, 0.0)) -> Grid:
    """The grid after running `modules` (in order) on a map on `grid`."""
    stride, offset = grid.stride, grid.offset
    for layer in spatial_layers(modules):
        k, s, p, d, _ = _layer_params(layer)
        offset = offset + stride * (d * (k - 1) / 2 - p)
        stride = stride * s
    return Grid(stride, offset)


def output_size(modules: Iterable[nn.Module], size: int) -> int:
    """The side length after `modules` for an input side `size`; 0 if some layer would reject it."""
    for layer in spatial_layers(modules):
        k, s, p, d, ceil = _layer_params(layer)
        # PyTorch's own formula (aten pooling_output_shape); for convs ceil is False.
        numerator = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)
        out = numerator // s + 1
        if ceil and (out - 1) * s >= size + p:  # a last window starting in the padding is dropped
            out -= 1
        if out < 1:
            return 0
        size = out
    return size


def min_input_size(modules: Iterable[nn.Module], limit: int = 4096) -> int:
    """The smallest side length every layer of `modules` accepts."""
    modules = list(modules)
    for size in range(1, limit + 1):
        if output_size(modules, size) >= 1:
            return size
    raise ValueError(f"no input size up to {limit} fits these layers")
