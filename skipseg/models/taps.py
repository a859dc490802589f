"""Taps of any torchvision classifier, found automatically, and a `Backbone` made from them.

Candidate taps (`find_taps`): the classifier is cut into units (its children, with plain
`nn.Sequential`/`nn.ModuleList` containers opened up, so ResNet's `layer3` gives `layer3.0` … and
VGG's `features` its single layers) and run once on the meta device (shapes only: no arithmetic,
no memory, so even ResNet-101 takes a fraction of a second) with a hook on every unit. The trunk
ends at the first global pooling. A unit is a candidate when

- it is a block (a module with children: a Bottleneck, an InceptionA, an InvertedResidual), or
- it is a single layer after which the stride changes (VGG's last ReLU before each pool, ResNet's
  stem ReLU), unless it leaves the previous candidate's stride and channels as they were, or
- it is the last unit of the trunk (the top).

Strides come from two probe sizes 128 pixels apart: stride = 128 / (difference of the output
sizes), exact for every stride dividing 128 whatever the padding arithmetic (Inception-v3's
unpadded 3×3 convs make input / output sizes like 224 / 25 useless).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from skipseg.errors import SkipsegError
from skipseg.models.backbones import Backbone, TapInfo, vgg16_classifier
from skipseg.models.inception import inception_v3_classifier

# Constructor arguments: no auxiliary classifiers (they are not part of the trunk); GoogLeNet built
# without its slow truncated-normal init (see `build_classifier`), and with the input transform its
# ImageNet weights expect (normalised RGB → its [-1, 1] scaling). Inception-v3: `inception.py`.
CLASSIFIER_KWARGS: dict[str, dict] = {
    "googlenet": {"aux_logits": False, "init_weights": False, "transform_input": True},
}
# The VGGs have a width multiplier (name -> batch norm), as skipseg's VGG16 backbones do.
SCALABLE = {"vgg16": False, "vgg16_bn": True}
# Every classifier with a width multiplier: the VGGs and Inception-v3.
NARROWABLE = (*SCALABLE, "inception_v3")
PROBE_SIZES = (224, 352)
_GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_CONTAINERS = (nn.Sequential, nn.ModuleList)


@dataclass(frozen=True)
class FoundTap:
    """A candidate tap: module name, output channels, stride, output (h, w) at the asked size,
    whether it is a block, and whether it is the last candidate at its stride (a stage end)."""

    name: str
    channels: int
    stride: int
    shape: tuple[int, int]
    block: bool
    stage_end: bool = False


def classifier_names() -> list[str]:
    """torchvision's image classifiers (the valid backbone names)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_classifier(name: str, width: float = 1.0) -> nn.Module:
    """torchvision classifier `name`, randomly initialised (weights are loaded by the caller);
    `vgg16`/`vgg16_bn` and `inception_v3` at any `width` (every channel count scaled), the others
    at width 1.0.

    Inception-v3/GoogLeNet get He (fan-out) init instead of their own truncated normal, which costs
    seconds on a CPU for a network that is usually loaded from ImageNet weights anyway.
    """
    import torchvision

    if name not in classifier_names():
        raise SkipsegError(f"model.backbone: unknown torchvision classifier {name!r}; valid: "
                           f"{', '.join(classifier_names())}")
    if name == "inception_v3":
        return inception_v3_classifier(width)
    if width != 1.0:
        if name not in SCALABLE:
            raise SkipsegError(f"model.width: {width:g}: only {', '.join(NARROWABLE)} can be narrowed, {name} needs "
                               "width 1.0 (for a small network pick a small backbone, e.g. mobilenet_v3_small)")
        return vgg16_classifier(SCALABLE[name], width)
    model = torchvision.models.get_model(name, weights=None, **CLASSIFIER_KWARGS.get(name, {}))
    if CLASSIFIER_KWARGS.get(name, {}).get("init_weights") is False:
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model


def default_weights(name: str) -> str:
    """The enum name of torchvision's default ImageNet weights, e.g. "Inception_V3_Weights.IMAGENET1K_V1"."""
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    return f"{enum.__name__}.{enum.DEFAULT.name}"


def _units(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    out = []
    for name, child in module.named_children():
        if type(child) in _CONTAINERS:
            out.extend(_units(child, f"{prefix}{name}."))
        else:
            out.append((f"{prefix}{name}", child))
    return out


def _trace(model: nn.Module, names: dict[nn.Module, str], size: tuple[int, int]) -> list[tuple[str, tuple]]:
    """(name, output shape) of the hooked modules in the order they ran (first call only)."""
    seen: list[tuple[str, tuple]] = []
    done: set[str] = set()

    def hook(module, args, out):
        name = names[module]
        if name not in done and isinstance(out, Tensor):
            done.add(name)
            seen.append((name, tuple(out.shape)))

    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *size, device="meta"))
    except RuntimeError as exc:
        raise SkipsegError(f"input size {size[0]}x{size[1]}: too small for this backbone ({exc})") from None
    finally:
        for handle in handles:
            handle.remove()
    return seen


@functools.lru_cache(maxsize=32)
def module_shapes(name: str, size: tuple[int, int], width: float = 1.0) -> tuple[tuple[str, tuple], ...]:
    """(module name, output shape) of every module of classifier `name` run at `size`, in run order."""
    with torch.device("meta"):
        model = build_classifier(name, width)
    model.eval()
    return tuple(_trace(model, {m: n for n, m in model.named_modules() if n}, size))


def _stride(a: tuple, b: tuple) -> int:
    step = PROBE_SIZES[1] - PROBE_SIZES[0]
    diff = b[-2] - a[-2]
    return round(step / diff) if diff > 0 else round(PROBE_SIZES[1] / b[-2])


def tap_geometry(name: str, taps: Sequence[str], width: float = 1.0) -> list[tuple[int, int]]:
    """(channels, stride) of each named module of classifier `name` (a `SkipsegError` for a name
    that is not one of its modules with a feature-map output)."""
    small, large = (dict(module_shapes(name, (s, s), width)) for s in PROBE_SIZES)
    out = []
    for tap in taps:
        if tap not in small or len(small[tap]) != 4:
            candidates = ", ".join(t.name for t in find_taps(name, width=width))
            raise SkipsegError(f"model.tap_names: {tap!r} is not a feature map of {name}; candidates: {candidates}")
        out.append((small[tap][1], _stride(small[tap], large[tap])))
    return out


def find_taps(name: str, size: tuple[int, int] | None = None, width: float = 1.0) -> list[FoundTap]:
    """Candidate taps of classifier `name` at `width`, bottom to top (the last is the top); shapes at `size`."""
    with torch.device("meta"):
        model = build_classifier(name, width)
    model.eval()
    modules = dict(_units(model))
    is_block = {unit: any(True for _ in module.children()) for unit, module in modules.items()}
    trunk: list[tuple[str, tuple]] = []  # (unit, output shape at the first probe size) in run order
    for unit, shape in _trace(model, {m: u for u, m in modules.items()}, (PROBE_SIZES[0],) * 2):
        if isinstance(modules[unit], _GLOBAL_POOLS) or len(shape) != 4:
            break
        trunk.append((unit, shape))
    if not trunk:
        raise SkipsegError(f"{name}: no convolutional feature maps found (not a CNN?)")
    hooked = {modules[u]: u for u, _ in trunk}
    large = dict(_trace(model, hooked, (PROBE_SIZES[1],) * 2))
    at_size = dict(_trace(model, hooked, size)) if size else {}
    strides = [_stride(shape, large[u]) for u, shape in trunk]
    found: list[FoundTap] = []
    for i, (unit, shape) in enumerate(trunk):
        last = i == len(trunk) - 1
        stride_changes = not last and strides[i + 1] != strides[i]
        if not (is_block[unit] or stride_changes or last):
            continue
        if not is_block[unit] and not last and found and (found[-1].stride, found[-1].channels) == (strides[i], shape[1]):
            continue  # a norm/activation layer right after a candidate: the same map again
        out = at_size.get(unit, (0, 0, 0, 0))
        found.append(FoundTap(unit, shape[1], strides[i], (out[-2], out[-1]), is_block[unit]))
    return [
        FoundTap(t.name, t.channels, t.stride, t.shape, t.block, i == len(found) - 1 or found[i + 1].stride != t.stride)
        for i, t in enumerate(found)
    ]


def format_taps(name: str, taps: Sequence[FoundTap], size: tuple[int, int] | None) -> str:
    """An aligned text table of `find_taps`' result."""
    at = f"  shape at {size[0]}x{size[1]}" if size else ""
    lines = [f"{name}: {len(taps)} candidate taps, bottom to top (the last is the top)", "",
             f"{'#':>3}  {'tap':<24}{'channels':>9}{'stride':>8}  {'kind':<6}{at}"]
    for i, tap in enumerate(taps, start=1):
        kind = "block" if tap.block else "layer"
        shape = f"  {tap.shape[0]} x {tap.shape[1]}" if size else ""
        end = "  (stage end)" if tap.stage_end else ""
        lines.append(f"{i:>3}  {tap.name:<24}{tap.channels:>9}{tap.stride:>8}  {kind:<6}{shape}{end}".rstrip())
    return "\n".join(line.rstrip() for line in lines)


class TorchvisionBackbone(Backbone):
    """Named taps of a torchvision classifier via `create_feature_extractor` (the layers after the
    last tap are dropped). `forward(x) -> {tap: [N, C_tap, ~H / stride, ~W / stride]}`.

    Cell offsets are not derived here (torchvision's layers include ops `geometry.py` does not
    track); `TapInfo.offset` is the nominal (stride - 1) / 2 that `F.interpolate(align_corners=False)`
    assumes, which is what the skip net's bilinear resampling uses anyway.
    """

    def __init__(self, name: str, taps: Sequence[str], classifier: nn.Module | None = None,
                 width: float = 1.0) -> None:
        from torchvision.models.feature_extraction import create_feature_extractor

        super().__init__()
        taps = list(dict.fromkeys(taps))
        geometry = tap_geometry(name, taps, width)
        classifier = classifier if classifier is not None else build_classifier(name, width)
        self.arch = self.torchvision_arch = name
        self.torchvision_weights = default_weights(name)
        self.body = create_feature_extractor(classifier, return_nodes={t: t for t in taps})
        self.feature_info = [TapInfo(t, c, s, (s - 1) / 2) for t, (c, s) in zip(taps, geometry)]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        try:
            out = self.body(x)
        except RuntimeError as exc:
            if "too small" in str(exc) or "can't be greater than" in str(exc) or "Output size is too small" in str(exc):
                raise SkipsegError(f"input of {x.shape[-2]}x{x.shape[-1]} pixels is too small for {self.arch} "
                                   f"({exc})") from None
            raise
        return {info.name: out[info.name] for info in self.feature_info}
