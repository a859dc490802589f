"""The probe's heads computed in bulk: a substitution for speed, applied to a built `ProbeNet`.

`ProbeNet.forward` (models/probe.py) runs each `SkipHead` in turn. `batch_heads` gives the same
scores and gradients (up to the order of float32 sums) with less work, the way `core.fc_matmul`
computes fc layers as matmuls: the backbone in channels_last (faster for inference-only passes,
fp32 too); the top 1×1 class convs of all heads as one conv; a tap's heads together
(`tap_scores`), each computing only the rows of its map that the grid resampling reads, with its
kernel trimmed to the taps that meet the map; one resampling per tap and one for all tops. Only
work whose result is multiplied by zero is skipped.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skipseg.models.probe import ProbeNet
from skipseg.models.skipnet import SkipHead, resample

# Tap heads compute only the rows the grid reads when those are at most this share: the strips copy n
# rows per row read, which costs more than it saves when nearly every row is read.
ROW_SHARE = 0.75


def read_rows(length: int, size: int, mode: str = "bilinear") -> Tensor:
    """`[R]` int64: the rows of a `length`-row map that resampling to `size` rows (`resample`, in
    `mode`) reads with a non-zero weight, taken from what it gives one-hot rows."""
    eye = torch.eye(length).view(1, length, length, 1)  # channel j: a one-hot at row j
    weights = resample(eye, (size, 1), mode)  # [1, L, size, 1]
    return weights[0, :, :, 0].ne(0).any(1).nonzero().flatten()


def trimmed_kernel(conv: nn.Conv2d, height: int, width: int) -> tuple[Tensor, tuple[int, int]]:
    """`conv`'s ("same"-padded, odd) weight less the outer taps that never meet a `height`×`width` map,
    and its padding: the same outputs and weight gradient (exactly 0 on the trimmed taps)."""
    kh, kw = conv.kernel_size
    eh, ew = min(kh, 2 * height - 1), min(kw, 2 * width - 1)
    dh, dw = (kh - eh) // 2, (kw - ew) // 2
    return conv.weight[:, :, dh : dh + eh, dw : dw + ew], (eh // 2, ew // 2)


class SmallMapConv(torch.autograd.Function):
    """`F.conv2d` of a no-grad map smaller than the kernel (3×3 under 5×5), its weight gradient as one
    batched matrix product over the kernel offsets: `dW[:, :, dy, dx] = g [D, N·h·w] @ f(dy, dx) [N·h·w, C]`."""

    @staticmethod
    def forward(ctx, f: Tensor, weight: Tensor, bias: Tensor, padding: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(f)
        ctx.padding, ctx.kernel = padding, tuple(weight.shape[2:])
        return F.conv2d(f, weight, bias, padding=padding)  # [N, D, h, w]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, Tensor | None, None]:
        (f,) = ctx.saved_tensors  # [N, C, h, w]
        (kh, kw), (ph, pw), (_, c, h, w) = ctx.kernel, ctx.padding, f.shape
        padded = F.pad(f, (pw, pw, ph, ph)).permute(0, 2, 3, 1)  # [N, h + 2ph, w + 2pw, C]
        shifted = torch.stack([padded[:, dy : dy + h, dx : dx + w].reshape(-1, c)
                               for dy in range(kh) for dx in range(kw)])  # [kh·kw, N·h·w, C]
        weight_grad = torch.matmul(grad.transpose(0, 1).reshape(grad.shape[1], -1), shifted)  # [kh·kw, D, C]
        bias_grad = grad.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
        return None, weight_grad.permute(1, 2, 0).reshape(-1, c, kh, kw), bias_grad, None


def head_conv(f: Tensor, weight: Tensor, bias: Tensor, padding: tuple[int, int]) -> Tensor:
    """`F.conv2d(f, weight, bias, padding)`; on CPU without autocast, a map smaller than the kernel
    takes `SmallMapConv`, whose weight gradient is one batched matrix product instead of oneDNN's
    backward-weights kernel, slow where most kernel taps fall outside the map."""
    small = f.shape[-2] * f.shape[-1] < weight.shape[-2] * weight.shape[-1]
    if small and f.device.type == "cpu" and not torch.is_autocast_enabled("cpu") and not f.requires_grad:
        return SmallMapConv.apply(f, weight, bias, padding)
    return F.conv2d(f, weight, bias, padding=padding)


def tap_scores(heads: Sequence[SkipHead], f: Tensor, grid: tuple[int, int], rows: Tensor | None,
               upsampling: str = "bilinear") -> Tensor:
    """`resample(z_i)` of every head on one tap, `[N, len(heads)·C, G, G]`, as `SkipHead` computes it.

    `rows` (`read_rows`; None: all): only those rows of h and z are computed, strips of n rows through
    the n×n conv; the rows left at 0 are weighed by 0, so scores and gradients are the full maps'.
    """
    n, _, height, width = f.shape  # f: [N, C_t, h_t, w_t], no grad
    kernels = [trimmed_kernel(head.conv_tap, height, width) for head in heads]
    most = max(ph for _, (ph, _) in kernels)
    padded = F.pad(f, (0, 0, most, most)) if rows is not None else f  # [N, C_t, h_t + 2p, w_t], once
    maps = []
    for head, (weight, (ph, pw)) in zip(heads, kernels):
        if rows is None:
            maps.append(head.score_tap(head.activation(head_conv(f, weight, head.conv_tap.bias, (ph, pw)))))
            continue
        window = rows[:, None] + torch.arange(most - ph, most + ph + 1, device=f.device)  # [R, n] padded rows
        strips = padded[:, :, window].transpose(1, 2)  # [N, R, C_t, n, w_t]
        h = F.conv2d(strips.flatten(0, 1), weight, head.conv_tap.bias, padding=(0, pw))  # [N·R, D, 1, w_t]
        z = head.score_tap(head.activation(h))  # [N·R, C, 1, w_t]
        maps.append(z.reshape(n, len(rows), -1, width).transpose(1, 2))  # [N, C, R, w_t]
    z = torch.cat(maps, 1)  # [N, K·C, R or h_t, w_t]
    if rows is not None:  # the unread rows stay 0: weighted by 0, they get no gradient either
        z = z.new_zeros(n, z.shape[1], height, width).index_copy(2, rows, z)
    return resample(z, grid, upsampling)  # [N, K·C, G, G]


class BatchedProbeNet(ProbeNet):
    """A `ProbeNet` whose forward computes every head in bulk (made by `batch_heads`, not built)."""

    groups: dict[str, list[int]]  # tap → the indices of its heads
    _rows: dict[tuple[int, str], Tensor | None]  # (tap height, device) → `_read_rows`

    def features(self, x: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            return self.backbone(x.contiguous(memory_format=torch.channels_last))

    def _read_rows(self, height: int, device: torch.device) -> Tensor | None:
        """The rows of a `height`-row tap map the grid reads (`read_rows`), None when nearly all."""
        key = (height, str(device))
        if key not in self._rows:
            rows = read_rows(height, self.grid[0], self.upsampling)
            self._rows[key] = rows.to(device) if len(rows) <= ROW_SHARE * height else None
        return self._rows[key]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        taps = self.features(x)
        heads, c = list(self.heads.values()), self.num_classes
        weight = torch.cat([h.score_top.weight for h in heads])  # [K·C, C_top, 1, 1]
        z_top = F.conv2d(taps[self.top], weight, torch.cat([h.score_top.bias for h in heads]))  # [N, K·C, h, w]
        scores = list(resample(z_top, self.grid, self.upsampling).split(c, 1))  # K × [N, C, G, G]
        for tap, indices in self.groups.items():
            f = taps[tap].contiguous(memory_format=_memory_format(heads[indices[0]].conv_tap.weight))
            z = tap_scores([heads[i] for i in indices], f, self.grid, self._read_rows(f.shape[-2], f.device),
                           self.upsampling)
            for i, z_i in zip(indices, z.split(c, 1)):
                scores[i] = scores[i] + z_i  # [N, C, G, G], top + tap as in SkipHead.forward
        if self.mode == "pixel":
            scores = resample(torch.cat(scores, 1), (x.shape[-2], x.shape[-1])).split(c, 1)  # K × [N, C, H, W]
        return dict(zip(self.heads, scores))


def _memory_format(weight: Tensor) -> torch.memory_format:
    """The head convs' memory format (the runtime's; contiguous ran them faster on CPU in fp32)."""
    cl = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def batch_heads(model: ProbeNet) -> ProbeNet:
    """Make `model` compute its heads in bulk (in place; returns it): same parameters, same
    state_dict, same scores and gradients as `ProbeNet.forward`."""
    model.__class__ = BatchedProbeNet
    model.groups = {}
    for index, spec in ((i, s) for i, s in enumerate(model.specs.values()) if s.tap):
        model.groups.setdefault(spec.tap, []).append(index)
    model._rows = {}
    model.backbone.to(memory_format=torch.channels_last)
    return model
