"""Backbones: modules that return their named taps, `{name: Tensor}`, finest first, like timm's
`features_only` models. Heads (FCN, skip nets) only ever see this interface:

- `forward(x [N,3,H,W]) -> dict[str, Tensor]` with every tap of `feature_info`, in that order;
- `feature_info`: one `TapInfo(name, channels, stride, offset)` per tap;
- `min_size`: the smallest input side length the layers accept (smaller → `SkipsegError`);
- for ImageNet initialisation, `torchvision_weights` (the weights enum name) and how a torchvision
  state_dict maps onto the backbone (`torchvision_fc`, `torchvision_ignore`; see `init.py`).

The VGG16, AlexNet and GoogLeNet builders below reproduce torchvision's modules (same attribute
names, so at width 1.0 `backbone.state_dict()` has torchvision's keys) with every channel count
scaled by `width`. A backbone made from any torchvision model with
`torchvision.models.feature_extraction` only has to subclass `Backbone` and fill the same fields.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.googlenet import BasicConv2d, Inception
from torchvision.models.vgg import VGG, make_layers

from skipseg.errors import SkipsegError
from skipseg.models.geometry import Grid, min_input_size, track_grid


def scaled(channels: int, width: float) -> int:
    """A channel count times `width`, rounded to the nearest integer and at least 1.

    Plain rounding (not multiples of 8) so that every width gives a proportionally smaller network,
    down to tiny test models; width 1.0 is the paper's network exactly.
    """
    return max(1, int(round(channels * width)))


@dataclass(frozen=True)
class TapInfo:
    """A named feature map of a backbone: cell j is centred on input pixel `stride * j + offset`."""

    name: str
    channels: int
    stride: int
    offset: float

    @property
    def grid(self) -> Grid:
        return Grid(self.stride, self.offset)


class Backbone(nn.Module):
    """Base class: see the module docstring for the contract."""

    feature_info: list[TapInfo]
    min_size: int = 1
    torchvision_weights: str | None = None  # e.g. "VGG16_Weights.IMAGENET1K_V1"
    torchvision_arch: str | None = None  # the torchvision classifier whose state_dict loads here, e.g. "vgg16_bn"
    torchvision_fc: dict[str, tuple[str, int]] = {}  # conv name -> (torchvision Linear key prefix, kernel)
    torchvision_ignore: tuple[str, ...] = ()  # torchvision key prefixes with no counterpart here
    torchvision_extra: tuple[str, ...] = ()  # key prefixes here with no torchvision counterpart (kept as built)

    def tap(self, name: str) -> TapInfo:
        for info in self.feature_info:
            if info.name == name:
                return info
        raise KeyError(f"{type(self).__name__} has no tap {name!r}; taps: {[i.name for i in self.feature_info]}")

    def check_input(self, x: Tensor) -> None:
        h, w = x.shape[-2:]
        if h < self.min_size or w < self.min_size:
            raise SkipsegError(
                f"input of {h}x{w} pixels is too small for {type(self).__name__}: "
                f"the minimum size is {self.min_size}x{self.min_size}"
            )


class StagedBackbone(Backbone):
    """A backbone that is a chain of stages, each ending in a tap; geometry read off the layers."""

    def _set_stages(self, stages: Sequence[tuple[str, int, Sequence[nn.Module]]]) -> None:
        # A plain list (not a ModuleList): the layers are registered under their torchvision names.
        self._stages = [(name, list(layers)) for name, _, layers in stages]
        infos, done = [], []
        for name, channels, layers in stages:
            done.extend(layers)
            grid = track_grid(done)
            infos.append(TapInfo(name, channels, int(grid.stride), grid.offset))
        self.feature_info = infos
        self.min_size = min_input_size(done)

    def prepare(self, x: Tensor) -> Tensor:
        """Input transform before the first stage (identity unless overridden)."""
        return x

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        self.check_input(x)
        x = self.prepare(x)
        taps: dict[str, Tensor] = {}
        for name, layers in self._stages:
            for layer in layers:
                x = layer(x)
            taps[name] = x
        return taps


def _fc_block(cin: int, cout: int, kernel: int, padding: int,
              dropout: float) -> tuple[nn.Conv2d, nn.ReLU, nn.Dropout]:
    return nn.Conv2d(cin, cout, kernel, padding=padding), nn.ReLU(inplace=True), nn.Dropout(dropout)


VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_classifier(batch_norm: bool, width: float = 1.0, num_classes: int = 1000, dropout: float = 0.5) -> VGG:
    """torchvision's `vgg16` / `vgg16_bn` classifier with every channel count scaled by `width`
    (its layout and initialisation: He fan-out convolutions, N(0, 0.01) linear layers, zero biases),
    so that its state_dict loads into the width-`width` segmentation backbones."""
    cfg = [v if v == "M" else scaled(v, width) for v in VGG16_CFG]
    model = VGG(make_layers(cfg, batch_norm=batch_norm), num_classes=num_classes, init_weights=True, dropout=dropout)
    c5, cfc = scaled(512, width), scaled(4096, width)
    model.classifier = nn.Sequential(
        nn.Linear(c5 * 7 * 7, cfc), nn.ReLU(True), nn.Dropout(dropout),
        nn.Linear(cfc, cfc), nn.ReLU(True), nn.Dropout(dropout),
        nn.Linear(cfc, num_classes),
    )
    for layer in model.classifier:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0, 0.01)
            nn.init.zeros_(layer.bias)
    return model


class VGG16Backbone(StagedBackbone):
    """VGG16 convolutions (torchvision `features.*`) + fc6/fc7 as convolutions.

    Taps pool1..pool5 (strides 2..32) and fc7 (after ReLU and dropout, stride 32). Pooling uses
    ceil_mode as Caffe's did, so every input pixel falls in some pool5 cell. fc6 is 7x7 with 'same'
    padding 3 by default; with `original_padding` conv1_1 is padded by 100 and fc6 unpadded, the
    layout of the FCN reference. `batch_norm` gives torchvision's `vgg16_bn` layout (and weights):
    not the paper's network, but one that trains from scratch on a small CPU budget.
    """

    torchvision_fc = {"fc6": ("classifier.0", 7), "fc7": ("classifier.3", 1)}
    fully_connected = ("fc6", "fc7")  # computed as matmuls on small CPU maps (`core.fc_matmul`)
    torchvision_ignore = ("classifier.6.",)

    def __init__(self, width: float = 1.0, original_padding: bool = False, dropout: float = 0.5,
                 batch_norm: bool = False) -> None:
        super().__init__()
        self.torchvision_weights = "VGG16_BN_Weights.IMAGENET1K_V1" if batch_norm else "VGG16_Weights.IMAGENET1K_V1"
        self.torchvision_arch = "vgg16_bn" if batch_norm else "vgg16"
        cfg = [v if v == "M" else scaled(v, width) for v in VGG16_CFG]
        self.features = make_layers(cfg, batch_norm=batch_norm)
        if original_padding:
            self.features[0].padding = (100, 100)
        c5, cfc = scaled(512, width), scaled(4096, width)
        self.fc6, self.relu6, self.drop6 = _fc_block(c5, cfc, 7, 0 if original_padding else 3, dropout)
        self.fc7, self.relu7, self.drop7 = _fc_block(cfc, cfc, 1, 0, dropout)
        stages, start, channels = [], 0, 3
        for i, layer in enumerate(self.features):
            if isinstance(layer, nn.Conv2d):
                channels = layer.out_channels
            elif isinstance(layer, nn.MaxPool2d):
                layer.ceil_mode = True
                stages.append((f"pool{len(stages) + 1}", channels, self.features[start : i + 1]))
                start = i + 1
        stages.append(("fc7", cfc, [self.fc6, self.relu6, self.drop6, self.fc7, self.relu7, self.drop7]))
        self._set_stages(stages)


class AlexNetBackbone(StagedBackbone):
    """torchvision's AlexNet `features.*` (ceil_mode pooling) + fc6 (6x6, pad 3) and fc7 convolutions.

    fc6 is 6x6 (AlexNet's pool5 is 6x6 at 224 pixels); an even kernel cannot be centred, and pad 3
    leaves its cells half a pixel from the ideal centres, which is as close as integer padding gets.
    Taps conv1 (stride 4), pool1 (8), pool2 (16), pool5 (32), fc7 (32).
    """

    torchvision_weights = "AlexNet_Weights.IMAGENET1K_V1"
    torchvision_arch = "alexnet"
    torchvision_fc = {"fc6": ("classifier.1", 6), "fc7": ("classifier.4", 1)}
    fully_connected = ("fc6", "fc7")
    torchvision_ignore = ("classifier.6.",)

    def __init__(self, width: float = 1.0, dropout: float = 0.5) -> None:
        super().__init__()
        c1, c2, c3, c4, c5, cfc = (scaled(c, width) for c in (64, 192, 384, 256, 256, 4096))
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        )
        self.fc6, self.relu6, self.drop6 = _fc_block(c5, cfc, 6, 3, dropout)
        self.fc7, self.relu7, self.drop7 = _fc_block(cfc, cfc, 1, 0, dropout)
        f = self.features
        self._set_stages([
            ("conv1", c1, f[0:2]), ("pool1", c1, f[2:3]), ("pool2", c2, f[3:6]), ("pool5", c5, f[6:13]),
            ("fc7", cfc, [self.fc6, self.relu6, self.drop6, self.fc7, self.relu7, self.drop7]),
        ])


# torchvision's Inception arguments: (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj).
_INCEPTION = {
    "inception3a": (64, 96, 128, 16, 32, 32), "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64), "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64), "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128), "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


class GoogLeNetBackbone(StagedBackbone):
    """torchvision's GoogLeNet without aux heads, final average pool and classifier.

    Taps conv1 (stride 2), conv3 (4), inception3b (8), inception4e (16), inception5b (32). The input
    is converted from ImageNet normalisation to the [-1, 1] scaling that torchvision's ported
    GoogLeNet weights expect (its `transform_input=True`).
    """

    torchvision_weights = "GoogLeNet_Weights.IMAGENET1K_V1"
    torchvision_arch = "googlenet"
    torchvision_ignore = ("aux1.", "aux2.", "fc.")

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3 = scaled(64, width), scaled(64, width), scaled(192, width)
        self.conv1 = BasicConv2d(3, c1, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(c1, c2, kernel_size=1)
        self.conv3 = BasicConv2d(c2, c3, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        cin = c3
        for name, chans in _INCEPTION.items():
            chans = [scaled(c, width) for c in chans]
            setattr(self, name, Inception(cin, *chans))
            cin = chans[0] + chans[2] + chans[4] + chans[5]
            if name == "inception3b":
                self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
                c3b = cin
            elif name == "inception4e":
                self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
                c4e = cin
        self._set_stages([
            ("conv1", c1, [self.conv1]),
            ("conv3", c3, [self.maxpool1, self.conv2, self.conv3]),
            ("inception3b", c3b, [self.maxpool2, self.inception3a, self.inception3b]),
            ("inception4e", c4e, [self.maxpool3] + [getattr(self, f"inception4{c}") for c in "abcde"]),
            ("inception5b", cin, [self.maxpool4, self.inception5a, self.inception5b]),
        ])
        # (x * std + mean - 0.5) / 0.5 per channel, as torchvision's GoogLeNet._transform_input.
        mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        self.register_buffer("input_scale", (std / 0.5).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", ((mean - 0.5) / 0.5).view(1, 3, 1, 1), persistent=False)

    def prepare(self, x: Tensor) -> Tensor:
        return x * self.input_scale + self.input_shift
