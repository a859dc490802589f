"""Inception-v3 at a channel width: torchvision's own `Inception3`, built through its
`inception_blocks` hook.

`Inception3(inception_blocks=[conv_block, InceptionA, ..., InceptionE, InceptionAux])` builds every
layer from the classes it is given. Handing it a `BasicConv2d` whose channel counts are multiplied by
`width` (the RGB input excepted), and the five Inception block classes with that conv block as their
`conv_block`, gives the same topology, the same module names and the same forward at any width; only
the final `fc` needs its input scaled (2048·width). Width 1 is torchvision's network exactly, so
ImageNet weights load as they are; width 1/4 has 1.4 M parameters instead of 22 M and can be
pretrained on a CPU (`skipseg pretrain inception_v3 --width 0.25`).
"""
from __future__ import annotations

import functools
from fractions import Fraction

from torch import nn
from torchvision.models.inception import (BasicConv2d, Inception3, InceptionA, InceptionAux, InceptionB,
                                          InceptionC, InceptionD, InceptionE)

from skipseg.errors import SkipsegError

# Every channel count of Inception-v3 (branch widths, block inputs, 2048 at the top) is a multiple of
# 16, so a width that makes 16 channels whole keeps each concatenation's sum equal to the next block's
# scaled input: widths k/16 (1/16, 1/8, 1/4, 1/2, 1, ...).
CHANNEL_UNIT = 16


class ScaledConv2d(BasicConv2d):
    """torchvision's Inception conv block (conv, batch norm eps 1e-3, ReLU) with its channel counts
    times `width`; the 3-channel image input stays 3."""

    def __init__(self, in_channels: int, out_channels: int, *, width: float = 1.0, **kwargs) -> None:
        cin = in_channels if in_channels == 3 else int(in_channels * width)
        super().__init__(cin, int(out_channels * width), **kwargs)


def check_width(width: float) -> None:
    """A `SkipsegError` unless `width` > 0 makes every Inception-v3 channel count whole."""
    if not width > 0 or (Fraction(width).limit_denominator(1 << 20) * CHANNEL_UNIT).denominator != 1:
        raise SkipsegError(f"model.width: {width:g} does not scale Inception-v3's channels to whole numbers; "
                           f"use a multiple of 1/{CHANNEL_UNIT} (e.g. 0.125, 0.25, 0.5, 1)")


def inception_v3_classifier(width: float = 1.0, num_classes: int = 1000, dropout: float = 0.5,
                            transform_input: bool = True) -> Inception3:
    """torchvision's `Inception3` (no auxiliary classifier) with every channel count times `width`.

    Convolutions start from He (fan-out) initialisation rather than torchvision's truncated normal,
    which takes seconds on a CPU for a network that is usually loaded from weights; batch norm and
    the final layer keep PyTorch's defaults. `transform_input`: the input is ImageNet-normalised RGB
    and converted to the [-1, 1] scaling torchvision's ImageNet weights expect.
    """
    check_width(width)
    conv = functools.partial(ScaledConv2d, width=width)
    blocks = [conv, *(functools.partial(block, conv_block=conv)
                      for block in (InceptionA, InceptionB, InceptionC, InceptionD, InceptionE, InceptionAux))]
    model = Inception3(num_classes=num_classes, aux_logits=False, transform_input=transform_input,
                       inception_blocks=blocks, init_weights=False, dropout=dropout)
    model.fc = nn.Linear(int(2048 * width), num_classes)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model
