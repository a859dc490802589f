"""Image classifiers in torchvision's own layout, the networks `skipseg pretrain` trains.

Their state_dicts load exactly where torchvision's ImageNet weights load: VGG16 (with or without
batch norm) into the FCN and DeconvNet backbones through the fc6/fc7 surgery, any torchvision
classifier into the skip net's trunk. `width` scales every VGG channel count as the segmentation
backbones do (`backbones.scaled`), so a width-1/8 classifier fits a width-1/8 FCN, and every
Inception-v3 channel count (`inception.py`), so a width-1/4 classifier fits a width-1/4 skip net; at
width 1.0 they are torchvision's networks exactly (with `num_classes` outputs).
"""
from __future__ import annotations

from torch import nn

from skipseg.errors import SkipsegError
from skipseg.models.backbones import vgg16_classifier
from skipseg.models.options import Dropout
from skipseg.models.inception import inception_v3_classifier
from skipseg.models.taps import NARROWABLE
from skipseg.models.taps import SCALABLE as VGG_ARCHS
from skipseg.models.taps import build_classifier, classifier_names


def build_pretrain_classifier(arch: str, num_classes: int, width: float = 1.0, dropout: Dropout = 0.0) -> nn.Module:
    """`vgg16` / `vgg16_bn` at any width (torchvision's init: He fan-out convolutions, zero biases),
    `inception_v3` at any width that keeps its channels whole (`inception.py`), or any other
    torchvision classifier at width 1.0 with a `num_classes`-way final layer."""
    if arch in VGG_ARCHS:
        return vgg16_classifier(VGG_ARCHS[arch], width, num_classes, dropout)
    if arch == "inception_v3":
        return inception_v3_classifier(width, num_classes, dropout)
    if width != 1.0:
        raise SkipsegError(f"--width {width}: only {', '.join(NARROWABLE)} can be narrowed; {arch} needs width 1.0")
    model = build_classifier(arch)
    name, layer = final_layer(model)
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], nn.Linear(layer.in_features, num_classes))
    return model


def final_layer(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier's last Linear layer (the class scores, which segmentation never uses)."""
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise SkipsegError(f"{type(model).__name__} has no final linear layer")
    return linears[-1]


def pretrain_archs() -> list[str]:
    """Backbones `skipseg pretrain` takes: the VGGs (any width) and torchvision's other classifiers."""
    return [*VGG_ARCHS, *(name for name in classifier_names() if name not in VGG_ARCHS)]
