"""All of a skip study's networks on one frozen backbone: the backbone and one `SkipHead` per (tap, n).

Yim & Sohn train one network per (tap, n) (Tables 1–2). With the backbone frozen, those networks
differ only in their heads, so `ProbeNet` holds the backbone once and every head beside it:
`forward(x) -> {name: logits}` is each head's `SkipHead.forward` on the same taps. The heads share
no parameter, so a summed loss gives each head exactly the gradient it would get alone.

This file is the network as the paper draws it, head by head. Training computes the same heads in
bulk (`engine.batched_heads`, a substitution applied after the model is built).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from skipseg.models.skipnet import GridPredictor, SkipHead, resample


@dataclass(frozen=True)
class HeadSpec:
    """One configuration: its name (the sweep's run name), tap module (None: the top alone), n."""

    name: str
    tap: str | None
    kernel: int | None


class ProbeNet(GridPredictor, nn.Module):
    """A frozen backbone and one `SkipHead` per `HeadSpec`; `forward(x) -> {name: logits}`.

    The backbone runs once per batch, without autograd and in eval mode (its batch norm included:
    right for trained weights; a random backbone keeps its initial statistics, i.e. does not
    normalise, which is why probing is meant for trained backbones).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, top: str, heads: Sequence[HeadSpec],
                 head_channels: int = 256, grid: int = 67, mode: str = "box", input_size: int | None = None,
                 head_activation: str = "relu", score_init: str = "zeros", cell_label: str = "majority",
                 score_upsampling: str = "bilinear") -> None:
        super().__init__()
        self.backbone, self.num_classes, self.top = backbone, num_classes, top
        self.grid, self.mode, self.cell_label, self.upsampling = (grid, grid), mode, cell_label, score_upsampling
        self.input_size = (input_size, input_size) if input_size else None
        self.specs = {spec.name: spec for spec in heads}
        top_channels = backbone.tap(top).channels
        self.heads = nn.ModuleDict({
            spec.name: SkipHead(top_channels, num_classes, backbone.tap(spec.tap).channels if spec.tap else None,
                                spec.kernel or 1, head_channels, head_activation, score_init, score_upsampling)
            for spec in heads
        })
        backbone.requires_grad_(False)
        backbone.eval()

    def train(self, mode: bool = True) -> ProbeNet:
        super().train(mode)
        self.backbone.eval()  # frozen, batch-norm statistics included
        return self

    def features(self, x: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():  # {name: [N, C_t, h_t, w_t]}, computed once for every head
            return self.backbone(x)

    def class_maps(self, x: Tensor, name: str) -> dict[str, Tensor]:
        """Head `name`'s per-class maps z at their own resolution (see `SkipHead.class_maps`)."""
        taps, spec = self.features(x), self.specs[name]
        return self.heads[name].class_maps(taps[self.top], taps[spec.tap] if spec.tap else None)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        taps = self.features(x)
        scores = {name: head(taps[self.top], taps[self.specs[name].tap] if self.specs[name].tap else None, self.grid)
                  for name, head in self.heads.items()}  # each [N, C, G, G], as SkipNet's head gives it
        if self.mode == "pixel":
            size = (x.shape[-2], x.shape[-1])
            scores = {name: resample(z, size) for name, z in scores.items()}  # [N, C, H, W]
        return scores
