"""Fully convolutional networks (Long, Shelhamer, Darrell 2015): FCN-32s/16s/8s on VGG16 and
FCN-32s on AlexNet and GoogLeNet, as backbone (named taps) + an FCN head.

The head's layer names follow the reference (`head.score_fr`, `head.score_pool4`, `head.upscore2`,
`head.upscore_pool4`, `head.upscore8`, ...) so that staged training copies FCN-32s → FCN-16s →
FCN-8s by name. How the score
maps are kept aligned with the input is explained in `upsample.py`.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor, nn

from skipseg.models.backbones import AlexNetBackbone, Backbone, GoogLeNetBackbone, VGG16Backbone
from skipseg.models.geometry import Grid
from skipseg.models.init import initialize
from skipseg.models.options import Dropout
from skipseg.models.registry import register_model
from skipseg.models.upsample import BilinearUpsample, cell_shift, crop, fuse


def _score(in_channels: int, num_classes: int) -> nn.Conv2d:
    # Zero-initialised as in the reference (Caffe's default filler): random init neither helped
    # there nor is needed, and a zero skip score leaves the coarser net's output unchanged at first.
    conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class FCNHead(nn.Module):
    """Score the top tap, then for each skip tap (coarse to fine): upsample the running score to
    the skip's stride, add the skip's score; finally upsample to the input and crop to it.

    Args:
        backbone: the `Backbone` whose taps `top` and `skips` name (read for channels and grids).
        skip_scales: multiply each skip's features before scoring (FCN-8s at-once: 0.01, 0.0001).
        learnable_upsampling: train the transposed convs (bilinear init either way).
        edge_pad: cells of edge replication before each upsampling (0 in the reference layout).
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        top: str,
        skips: Sequence[str] = (),
        skip_scales: Sequence[float] | None = None,
        learnable_upsampling: bool = False,
        edge_pad: int = 1,
    ) -> None:
        super().__init__()
        self.top, self.num_classes = top, num_classes
        info = backbone.tap(top)
        self.score_fr = _score(info.channels, num_classes)
        scales = tuple(skip_scales) if skip_scales is not None else (1.0,) * len(skips)
        # The plan: (upsampler name, skip tap, skip scale, cell shift of the fusion). All grids are
        # fixed by the layers, so every crop offset is known here, before any input is seen.
        self.stages: list[tuple[str, str, float, int]] = []
        grid: Grid = info.grid
        for i, (tap, scale) in enumerate(zip(skips, scales)):
            skip = backbone.tap(tap)
            factor = info.stride // skip.stride
            name = f"upscore{factor}" if i == 0 else f"upscore_{skips[i - 1]}"
            up = BilinearUpsample(num_classes, factor, learnable_upsampling, edge_pad)
            setattr(self, name, up)
            setattr(self, f"score_{tap}", _score(skip.channels, num_classes))
            grid = up.output_grid(grid)
            shift = cell_shift(grid, skip.grid)
            self.stages.append((name, tap, scale, shift))
            grid = Grid(grid.stride, grid.offset + max(shift, 0) * grid.stride)  # the fused cells
            info = skip
        self.final = f"upscore{info.stride}" if skips else "upscore"
        up = BilinearUpsample(num_classes, info.stride, learnable_upsampling, edge_pad)
        setattr(self, self.final, up)
        self.crop_start = cell_shift(up.output_grid(grid), Grid(1, 0.0))

    @property
    def crop_offsets(self) -> tuple[int, ...]:
        """Each fusion's shift (index in the upsampled map of the skip's cell 0; negative: the skip
        map is cropped instead) and the final crop, e.g. (-5, -9, 31) for the reference FCN-8s."""
        return tuple(s[3] for s in self.stages) + (self.crop_start,)

    def forward(self, taps: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
        score = self.score_fr(taps[self.top])  # [N, K, h_top, w_top]
        for up_name, tap, scale, shift in self.stages:
            feat = taps[tap] * scale if scale != 1.0 else taps[tap]
            # [N, K, 2 h, 2 w] (plus edges) + [N, K, h_tap, w_tap] -> the cells both cover
            score = fuse(getattr(self, up_name)(score), getattr(self, f"score_{tap}")(feat), shift)
        score = getattr(self, self.final)(score)  # [N, K, >= H, >= W]
        return crop(score, self.crop_start, size)  # [N, K, H, W]


class FCN(nn.Module):
    """A backbone (named taps) + an `FCNHead` built on those taps."""

    def __init__(self, backbone: Backbone, head: FCNHead) -> None:
        super().__init__()
        self.backbone, self.head, self.num_classes = backbone, head, head.num_classes
        self.fully_connected = tuple(f"backbone.{name}" for name in getattr(backbone, "fully_connected", ()))

    def forward(self, x: Tensor) -> Tensor:
        taps = self.backbone(x)  # {name: [N, C_tap, H / stride, W / stride] (about)}
        return self.head(taps, (x.shape[-2], x.shape[-1]))  # [N, K, H, W]


def _vgg_fcn(name: str, description: str, skips: tuple[str, ...] = (),
             scales: tuple[float, ...] | None = None) -> Callable[..., FCN]:
    """Register the VGG16 FCN `name`: fc7 scored, then the `skips` taps (coarse to fine), each
    multiplied by its `scales` factor. The four VGG16 FCNs differ only there, so their options are
    written once: the signature of `build`."""

    def build(num_classes: int = 21, width: float = 1.0, pretrained: str | None = None, weights: str | None = None,
              init_from: str | None = None, learnable_upsampling: bool = False, original_padding: bool = False,
              dropout: Dropout = 0.5, batch_norm: bool = False) -> FCN:
        """`learnable_upsampling`: train the transposed convs (bilinear init either way);
        `original_padding`: the reference layout (conv1_1 padded by 100, fc6 unpadded, no edge padding);
        `dropout`: of fc6/fc7 (the reference: 0.5); `batch_norm`: torchvision's vgg16_bn layout and weights."""
        backbone = VGG16Backbone(width, original_padding=original_padding, dropout=dropout, batch_norm=batch_norm)
        head = FCNHead(backbone, num_classes, "fc7", skips, scales, learnable_upsampling,
                       edge_pad=0 if original_padding else 1)
        model = FCN(backbone, head)
        initialize(model, width=width, pretrained=pretrained, weights=weights, init_from=init_from)
        return model

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{description}. {build.__doc__}"
    return register_model(name, description)(build)


fcn32s = _vgg_fcn("fcn32s", "FCN-32s, VGG16: fc7 scores upsampled x32 (Long et al. 2015)")
fcn16s = _vgg_fcn("fcn16s", "FCN-16s, VGG16: FCN-32s + pool4 scores, upsampled x16", ("pool4",))
fcn8s = _vgg_fcn("fcn8s", "FCN-8s, VGG16: FCN-16s + pool3 scores, upsampled x8", ("pool4", "pool3"))
fcn8s_atonce = _vgg_fcn("fcn8s_atonce", "FCN-8s trained at once: pool4 scaled by 0.01, pool3 by 0.0001 before scoring",
                        ("pool4", "pool3"), (0.01, 0.0001))


@register_model("fcn32s_alexnet", "FCN-32s on AlexNet: fc6 6x6 and fc7 as convolutions, upsampled x32")
def fcn32s_alexnet(num_classes: int = 21, width: float = 1.0, pretrained: str | None = None,
                   weights: str | None = None, init_from: str | None = None,
                   learnable_upsampling: bool = False, dropout: Dropout = 0.5) -> FCN:
    backbone = AlexNetBackbone(width, dropout)
    model = FCN(backbone, FCNHead(backbone, num_classes, "fc7", learnable_upsampling=learnable_upsampling))
    initialize(model, width=width, pretrained=pretrained, weights=weights, init_from=init_from)
    return model


@register_model("fcn32s_googlenet", "FCN-32s on GoogLeNet: last inception output (stride 32) scored, upsampled x32")
def fcn32s_googlenet(num_classes: int = 21, width: float = 1.0, pretrained: str | None = None,
                     weights: str | None = None, init_from: str | None = None,
                     learnable_upsampling: bool = False) -> FCN:
    backbone = GoogLeNetBackbone(width)
    model = FCN(backbone, FCNHead(backbone, num_classes, "inception5b", learnable_upsampling=learnable_upsampling))
    initialize(model, width=width, pretrained=pretrained, weights=weights, init_from=init_from)
    return model
