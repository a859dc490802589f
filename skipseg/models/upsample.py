"""In-network upsampling (transposed convolution initialised to bilinear interpolation) and the
crops that keep score maps aligned with the input.

Alignment, the whole argument (see `geometry.Grid`: a map's cell j is centred on input pixel
`stride * j + offset`):

- A transposed conv with stride f, kernel k = 2f - f % 2 and centre c = (k - 1) / 2 (FCN's
  `upsample_filt`) puts input cell j (after `edge_pad` cells of padding) on output index
  `(j + edge_pad) * f + c`, so its output lies on the grid `(stride / f, offset - stride / f *
  (edge_pad * f + c))` (`BilinearUpsample.output_grid`). Nothing has to be assumed about where the
  backbone's cells are: the offsets are read off its layers.
- Two maps on the same stride are summed over the cells both cover (`fuse`); the fused map keeps
  the grid of those cells. With offsets differing by whole cells (all of VGG16) this is exact.
- The last upsampling gives a stride-1 map; `crop` cuts out the cells whose centres are
  pixels 0..H-1, 0..W-1, so output pixel (y, x) is the prediction centred on input pixel (y, x).

With the default 'same' layout (VGG16: fc6 pad 3, ceil_mode pools) pool_k cells sit exactly where
`F.interpolate(align_corners=False)` assumes them, so a fixed bilinear FCN-32s output equals
`F.interpolate(score_fr, scale_factor=32, mode="bilinear")[..., :H, :W]`. Edges: the score map is
padded by one replicated cell (`edge_pad=1`) before the transposed conv, so border pixels are
interpolated against a copy of the edge cell (as `F.interpolate` clamps) instead of against
zeros, which would halve the border logits. With `original_padding` (conv1_1 pad 100, fc6 unpadded)
there is no edge padding and these rules give back the reference's crop offsets 19; 5, 27; 5, 9, 31.
AlexNet's and GoogLeNet's strided 11x11/7x7 convs and 3x3/2 pools put their cells half a pixel off
any integer shift, so their predictions are centred to within half a pixel (rounded).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skipseg.models.geometry import Grid


def bilinear_kernel(factor: int) -> Tensor:
    """The `(k, k)` bilinear interpolation kernel of FCN's `upsample_filt`, k = 2f - f % 2."""
    size = 2 * factor - factor % 2
    center = (size - 1) / 2
    ramp = 1 - (torch.arange(size, dtype=torch.float32) - center).abs() / factor
    return ramp[:, None] * ramp[None, :]


class BilinearUpsample(nn.ConvTranspose2d):
    """C→C transposed conv (stride f, no bias) with the bilinear kernel on the diagonal.

    The weight is a full C×C kernel as in the reference (so a learnable one may mix classes); by
    default it is frozen (`requires_grad=False`), which is the reference's `lr_mult: 0`.
    """

    def __init__(self, channels: int, factor: int, learnable: bool = False, edge_pad: int = 1) -> None:
        size = 2 * factor - factor % 2
        super().__init__(channels, channels, size, stride=factor, bias=False)
        self.factor, self.edge_pad = factor, edge_pad
        self.weight.requires_grad_(learnable)

    def reset_parameters(self) -> None:
        kernel = bilinear_kernel(self.stride[0]).to(self.weight.device)
        eye = torch.eye(self.out_channels, device=self.weight.device)
        with torch.no_grad():
            self.weight.copy_(eye[:, :, None, None] * kernel)

    def output_grid(self, grid: Grid) -> Grid:
        stride = grid.stride / self.factor
        center = (self.kernel_size[0] - 1) / 2
        return Grid(stride, grid.offset - stride * (self.edge_pad * self.factor + center))

    def forward(self, x: Tensor) -> Tensor:
        if self.edge_pad:
            x = F.pad(x, [self.edge_pad] * 4, mode="replicate")
        # [N, C, h + 2p, w + 2p] -> [N, C, (h + 2p - 1) * f + k, ...]
        return F.conv_transpose2d(x, self.weight, stride=self.factor)


def nearest(v: float) -> int:
    """Round half up (a grid shift that is not a whole number of cells)."""
    return math.floor(v + 0.5)


def cell_shift(grid: Grid, target: Grid) -> int:
    """The index in a map on `grid` of the cell centred where `target`'s cell 0 is."""
    if grid.stride != target.stride:
        raise ValueError(f"grids of strides {grid.stride} and {target.stride} do not line up")
    return nearest((target.offset - grid.offset) / grid.stride)


def crop(x: Tensor, start: int, size: tuple[int, int]) -> Tensor:
    """`x[..., start:start+h, start:start+w]`; cells outside `x` (none for the models here, kept for
    safety) are filled by replicating the edge.

    `narrow` rather than slicing: the result is exactly `size`, also when the sizes are symbolic
    (ONNX export with dynamic height/width), where a slice's clamp would leave the output size as
    a min() expression of the input size instead of the input size itself.
    """
    (h, w), (out_h, out_w) = x.shape[-2:], size
    pads = [max(0, -start), max(0, start + out_w - w), max(0, -start), max(0, start + out_h - h)]
    if any(pads):
        x = F.pad(x, pads, mode="replicate")
    start = max(start, 0)
    return x.narrow(-2, start, out_h).narrow(-1, start, out_w)


def fuse(a: Tensor, b: Tensor, shift: int) -> Tensor:
    """`a + b` over the cells both cover, where cell 0 of `b` is cell `shift` of `a`.

    A positive shift crops `a` (the default layout: the upsampled map overhangs the skip map); a
    negative one crops `b` (the reference's layout, which crops the padded pool4/pool3 scores).
    In both layouts the cropped map covers the other one for every input size, so the fused map
    has the other's size; `narrow` checks that and keeps that size a plain symbol under ONNX
    export with dynamic sizes (slices would nest min() expressions and slow the export).
    """
    if shift > 0:  # [N, K, h_b, w_b]
        return a.narrow(-2, shift, b.shape[-2]).narrow(-1, shift, b.shape[-1]) + b
    if shift < 0:  # [N, K, h_a, w_a]
        return a + b.narrow(-2, -shift, a.shape[-2]).narrow(-1, -shift, a.shape[-1])
    a0, b0 = max(shift, 0), max(-shift, 0)
    h = min(a.shape[-2] - a0, b.shape[-2] - b0)
    w = min(a.shape[-1] - a0, b.shape[-1] - b0)
    return a[..., a0 : a0 + h, a0 : a0 + w] + b[..., b0 : b0 + h, b0 : b0 + w]
