"""The single-skip-connection net (Yim & Sohn 2017) on any torchvision backbone.

    z_top = 1×1 conv(f_top)                                  [N, C, h_top, w_top]
    h_i = ReLU(n×n conv(f_i)),  z_i = 1×1 conv(h_i)          [N, C, h_i, w_i]   (tap i, if any)
    score = up_G(z_top) + up_G(z_i)                          [N, C, G, G]

`up_G` resamples to a G×G grid of image cells (bilinear, `align_corners=False`). Box-wise mode (the
paper's) predicts those cells: a cell's target is the majority label of its pixels
(`majority_vote`), and the model says so to the engine with `output_grid = (G, G)` and
`target_from_mask`. What the paper leaves open is an option, the reconstruction its default:
`head_activation` (the ReLU on h), `head_channels` (h's width), `score_init` (the 1×1 class convs
start at zero), `cell_label` (a cell's target: the majority of its pixels, or its centre pixel) and
`score_upsampling` (up_G: bilinear or nearest). Pixel-wise mode (the paper's stated next step)
upsamples the G×G score bilinearly to the input size and is trained and scored per pixel like every
other model.

Cells and pixels: `models/cells.py`.

Taps are configuration: `tap_names` (numbered from 1, the lowest) and `top` default to
`tap_maps.yaml` (Inception-v3: the paper's seven taps and Mixed_7c), else to the taps
`taps.find_taps` finds. `tap` is a number into `tap_names`, a module name, or none.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Sequence

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from skipseg.errors import SkipsegError
from skipseg.models.cells import CELL_LABELS
from skipseg.models.classifiers import final_layer
from skipseg.models.init import imagenet_state_dict, init_from_checkpoint, load_exactly, read_state_dict
from skipseg.models.options import Count, OddSize, OneOf
from skipseg.models.pretrained import shapes_weights
from skipseg.models.registry import register_model
from skipseg.models.taps import TorchvisionBackbone, build_classifier, default_weights, find_taps

logger = logging.getLogger(__name__)

TAP_MAPS = Path(__file__).with_name("tap_maps.yaml")
_AUX_PREFIXES = ("AuxLogits.", "aux1.", "aux2.")  # torchvision files keep aux heads built here without


def default_taps(backbone: str, width: float = 1.0) -> tuple[list[str], str]:
    """(numbered taps, top) of `backbone` from tap_maps.yaml, else from `find_taps`."""
    maps = yaml.safe_load(TAP_MAPS.read_text()) or {}
    if backbone in maps:
        return list(maps[backbone]["taps"]), maps[backbone]["top"]
    found = [t.name for t in find_taps(backbone, width=width)]
    return found[:-1], found[-1]


def resolve_taps(backbone: str, tap_names: Sequence[str] | None = None, top: str | None = None,
                 width: float = 1.0) -> tuple[list[str], str]:
    """The numbered taps and the top after config overrides (`model.tap_names`, `model.top`)."""
    names, default_top = default_taps(backbone, width)
    return (list(tap_names) if tap_names is not None else names), (top or default_top)


def resolve_tap(tap: str | int | None, names: Sequence[str]) -> tuple[str | None, str | None]:
    """`(label, module name)` of a configured tap: a number k is `names[k - 1]` (label "k"), a name
    of the list gets its number, another module name is its own label; none/null is `(None, None)`."""
    if tap is None or str(tap).strip().lower() in ("none", "null", ""):
        return None, None
    text = str(tap).strip()
    if text.isdigit():
        k = int(text)
        if not 1 <= k <= len(names):
            listing = ", ".join(f"{i}={n}" for i, n in enumerate(names, start=1))
            raise SkipsegError(f"model.tap: {k} is not a tap number; taps: {listing}")
        return text, names[k - 1]
    if text in names:
        return str(list(names).index(text) + 1), text
    return text, text


HEAD_ACTIVATIONS = {"relu": nn.ReLU, "none": nn.Identity}
SCORE_INITS = ("zeros", "normal")
UPSAMPLINGS = ("bilinear", "nearest")
# The rules of the string options (the builder's signature says which option takes which).
Mode = Annotated[str, OneOf(("box", "pixel"))]
HeadActivation = Annotated[str, OneOf(tuple(HEAD_ACTIVATIONS))]
ScoreInit = Annotated[str, OneOf(SCORE_INITS)]
CellLabel = Annotated[str, OneOf(tuple(CELL_LABELS))]
Upsampling = Annotated[str, OneOf(UPSAMPLINGS)]


def _score(in_channels: int, num_classes: int, init: str = "zeros") -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
    if init == "zeros":  # like FCN's score layers: a new skip starts as a no-op on the top's scores
        nn.init.zeros_(conv.weight)
    else:  # "normal": small random weights, as a classifier's last layer
        nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)
    return conv


def resample(x: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Resize `[N, C, h, w]` to `size` (bilinear with align_corners=False, or nearest); identity when equal."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SkipHead(nn.Module):
    """Everything above the backbone: the top's 1×1 class conv and, for a tap, n×n conv + ReLU + 1×1
    (the ReLU: `activation`), each class map resampled to the grid by `upsampling`."""

    def __init__(self, top_channels: int, num_classes: int, tap_channels: int | None = None,
                 kernel: int = 3, head_channels: int = 256, activation: str = "relu", score_init: str = "zeros",
                 upsampling: str = "bilinear") -> None:
        super().__init__()
        self.upsampling = upsampling
        self.score_top = _score(top_channels, num_classes, score_init)
        self.has_tap = tap_channels is not None
        if self.has_tap:
            self.conv_tap = nn.Conv2d(tap_channels, head_channels, kernel, padding=kernel // 2)
            self.activation = HEAD_ACTIVATIONS[activation]()
            self.score_tap = _score(head_channels, num_classes, score_init)

    def class_maps(self, top: Tensor, tap: Tensor | None = None) -> dict[str, Tensor]:
        """`{"top": z_top [N, C, h_top, w_top], "tap": z_i [N, C, h_i, w_i]}` (no "tap" without one)."""
        maps = {"top": self.score_top(top)}
        if self.has_tap:
            maps["tap"] = self.score_tap(self.activation(self.conv_tap(tap)))
        return maps

    def forward(self, top: Tensor, tap: Tensor | None, grid: tuple[int, int]) -> Tensor:
        maps = self.class_maps(top, tap)
        score = resample(maps["top"], grid, self.upsampling)  # [N, C, G, G]
        if "tap" in maps:
            score = score + resample(maps["tap"], grid, self.upsampling)
        return score


class GridPredictor:
    """What the engine asks of a model that may predict grid cells (box mode): `output_grid` and
    `target_from_mask`. Needs `grid` (G, G), `mode` ("box" | "pixel"), `num_classes` and
    `cell_label` (a key of CELL_LABELS)."""

    grid: tuple[int, int]
    mode: str
    num_classes: int
    cell_label: str = "majority"

    @property
    def output_grid(self) -> tuple[int, int] | None:
        """(G, G) in box mode: outputs are cells, scored against `target_from_mask`; None per pixel."""
        return self.grid if self.mode == "box" else None

    def target_from_mask(self, mask: Tensor) -> Tensor:
        """`[N, H, W]` pixel labels → `[N, G, G]` cell labels (`majority_vote` or `centre_label`)."""
        return CELL_LABELS[self.cell_label](mask, self.grid, self.num_classes)


class SkipNet(GridPredictor, nn.Module):
    """Backbone taps → `SkipHead` → `[N, C, G, G]` (box) or `[N, C, H, W]` (pixel)."""

    def __init__(self, backbone: TorchvisionBackbone, num_classes: int, top: str, tap: str | None = None,
                 kernel: int = 3, head_channels: int = 256, grid: int = 67, mode: str = "box",
                 input_size: int | None = None, freeze_backbone: bool = False, head_activation: str = "relu",
                 score_init: str = "zeros", cell_label: str = "majority", score_upsampling: str = "bilinear") -> None:
        super().__init__()
        self.backbone, self.num_classes, self.top, self.tap = backbone, num_classes, top, tap
        self.grid, self.mode, self.frozen, self.cell_label = (grid, grid), mode, freeze_backbone, cell_label
        self.input_size = (input_size, input_size) if input_size else None  # the predictor resizes to it
        tap_channels = backbone.tap(tap).channels if tap else None
        self.head = SkipHead(backbone.tap(top).channels, num_classes, tap_channels, kernel, head_channels,
                             head_activation, score_init, score_upsampling)
        if freeze_backbone:
            backbone.requires_grad_(False)
            backbone.eval()

    def train(self, mode: bool = True) -> SkipNet:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # frozen batch-norm statistics too
        return self

    def class_maps(self, x: Tensor) -> dict[str, Tensor]:
        """The per-class maps z of the top and the tap at their own resolution (the paper's Fig. 4-6)."""
        taps = self.backbone(x)
        return self.head.class_maps(taps[self.top], taps[self.tap] if self.tap else None)

    def forward(self, x: Tensor) -> Tensor:
        taps = self.backbone(x)  # {name: [N, C_t, ~H / s_t, ~W / s_t]}
        score = self.head(taps[self.top], taps[self.tap] if self.tap else None, self.grid)  # [N, C, G, G]
        if self.mode == "pixel":
            score = resample(score, (x.shape[-2], x.shape[-1]))  # [N, C, H, W]
        return score


def load_classifier_weights(classifier: nn.Module, backbone: str, pretrained: str | None,
                            weights: str | Path | None, width: float = 1.0) -> None:
    """ImageNet weights (torchvision's weights API, its hub cache), the shipped shape-pretrained file
    (`pretrained: shapes`) or a torchvision-format file, loaded into the whole classifier before its
    trunk is cut out; the no-download error is init.py's. The final class layer is not part of the
    trunk: one trained for another number of classes (the 20 shape families) is left out."""
    if pretrained and weights:
        raise SkipsegError(f"give either pretrained={pretrained} or weights=FILE, not both")
    if pretrained == "shapes":
        weights = shapes_weights(backbone, width)
    elif pretrained:
        if pretrained != "imagenet":
            raise SkipsegError(f"pretrained={pretrained!r}: expected 'imagenet' (torchvision's weights) or "
                               "'shapes' (the shipped shape-pretrained classifiers)")
        source = default_weights(backbone)
        state = imagenet_state_dict(source)
    if weights is not None:
        source, state = str(weights), read_state_dict(weights)
    elif not pretrained:
        return
    target = classifier.state_dict()
    state = {k: v for k, v in state.items() if k in target or not k.startswith(_AUX_PREFIXES)}
    head, _ = final_layer(classifier)
    for key in (f"{head}.weight", f"{head}.bias"):
        if key in state and key in target and state[key].shape != target[key].shape:
            state[key] = target[key]  # another label space: the trunk is what transfers
    load_exactly(classifier, state, source)
    logger.info("backbone %s initialised from %s", backbone, source)


@register_model("skipnet", "single skip connection (Yim & Sohn 2017): top + one tap's n×n head on a G×G grid, "
                           "any torchvision backbone (default Inception-v3)")
def skipnet(num_classes: int = 21, width: float = 1.0, pretrained: str | None = None, weights: str | None = None,
            init_from: str | None = None, backbone: str = "inception_v3", tap: str | None = None,
            tap_names: list[str] | None = None, top: str | None = None, kernel: OddSize = 3,
            head_channels: Count = 256, grid: Count = 67, mode: Mode = "box", input_size: Count | None = None,
            freeze_backbone: bool = False, head_activation: HeadActivation = "relu", score_init: ScoreInit = "zeros",
            cell_label: CellLabel = "majority", score_upsampling: Upsampling = "bilinear") -> SkipNet:
    """`backbone`: any torchvision classifier (inception_v3, resnet50, ...). `tap`: a number into
    `tap_names` (1 = the lowest), a module name, or None = the paper's "no connection" (the top
    alone); `tap_names`, `top`: module docstring. `kernel`: n of the tap's n×n conv; `head_channels`:
    h's width, which the paper does not give (one width for every tap keeps the heads' capacity
    equal across the comparison). `grid`: G; `mode`: box (cells) or pixel; `input_size`: the square
    input images are resized to (the paper: 559); `freeze_backbone`: train only the heads.
    `head_activation`, `score_init`, `cell_label`, `score_upsampling`: the other choices the paper
    leaves open (module docstring).
    `width` narrows a VGG16 backbone as FCN's and DeconvNet's are (other backbones: 1.0). The
    annotations are the options' rules, checked by `build_model` (`options.py`)."""
    classifier = build_classifier(backbone, width)
    names, top = resolve_taps(backbone, tap_names, top, width)
    _, tap_name = resolve_tap(tap, names)
    if init_from is None:
        load_classifier_weights(classifier, backbone, pretrained, weights, width)
    taps = [*names, *([tap_name] if tap_name else []), top]
    model = SkipNet(TorchvisionBackbone(backbone, taps, classifier, width), num_classes, top, tap_name, kernel,
                    head_channels, grid, mode, input_size, freeze_backbone, head_activation, score_init,
                    cell_label, score_upsampling)
    if init_from is not None:
        init_from_checkpoint(model, init_from)
    return model
