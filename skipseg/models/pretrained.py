"""Shipped shape-pretrained classifiers: what `pretrained: shapes` loads.

`skipseg pretrain` writes a torchvision-format state_dict and a card (JSON) beside it; the files
that ship with skipseg live in `skipseg/weights/`. A model with `pretrained: shapes` picks the file
whose card names its backbone architecture and width, and loads it through the path that
`pretrained: imagenet` takes (fc6/fc7 surgery for FCN and DeconvNet, the whole trunk for skip nets).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from skipseg.errors import SkipsegError

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "weights"
CARD_SUFFIX = ".json"


@dataclass(frozen=True)
class Card:
    """What a pretrained file is: the keys `skipseg pretrain` writes (see `engine/pretrain.py`)."""

    path: Path  # the weights file the card describes
    backbone: str
    width: float
    input_size: int
    top1: float
    sha256: str
    command: str


def card_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(CARD_SUFFIX)


def read_card(path: str | Path) -> Card:
    """The card of a weights file (or the card file itself); a missing key is an error naming it."""
    path = Path(path)
    card_file = path if path.suffix == CARD_SUFFIX else card_path(path)
    try:
        data = json.loads(card_file.read_text())
        return Card(card_file.with_suffix(".pt"), str(data["backbone"]), float(data["width"]),
                    int(data["input_size"]), float(data["top1"]), str(data["sha256"]), str(data["command"]))
    except FileNotFoundError:
        raise SkipsegError(f"{card_file}: no card for this pretrained file") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise SkipsegError(f"{card_file}: not a readable pretraining card ({type(exc).__name__}: {exc})") from None


def shipped_cards(folder: Path | None = None) -> list[Card]:
    """Every card in `folder` (default: the shipped one), sorted by backbone and width."""
    folder = folder or SHIPPED_DIR
    cards = [read_card(p) for p in sorted(folder.glob(f"*{CARD_SUFFIX}"))] if folder.is_dir() else []
    return sorted(cards, key=lambda c: (c.backbone, c.width))


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(cards: list[Card]) -> str:
    return ", ".join(f"{c.backbone} width {c.width:g}" for c in cards) or "none"


def shapes_weights(backbone: str, width: float, folder: Path | None = None) -> Path:
    """The shipped file for `backbone` (a torchvision architecture, e.g. vgg16_bn) at `width`,
    checked against its card's sha256; a clear error listing the shipped ones when none matches."""
    cards = shipped_cards(folder)
    for card in cards:
        if card.backbone == backbone and card.width == width:
            if not card.path.is_file():
                raise SkipsegError(f"{card.path}: the file its card describes is missing; reinstall skipseg")
            if sha256(card.path) != card.sha256:
                raise SkipsegError(f"{card.path}: sha256 differs from its card's; the file is damaged, reinstall skipseg")
            return card.path
    raise SkipsegError(f"pretrained=shapes: no shape-pretrained {backbone} at width {width:g} ships with skipseg "
                       f"(shipped: {describe(cards)}); make one with `skipseg pretrain {backbone} --width {width:g} "
                       f"--out FILE` and pass weights=FILE")


def accepted_sets(model_name: str) -> list[str]:
    """What `pretrained:` a registered model takes: imagenet, and each shipped shapes file that fits
    one of its backbone variants (built on the meta device: no memory, no computation)."""
    import torch

    from skipseg.models.registry import build_model, model_options

    options = model_options(model_name)
    cards = shipped_cards()
    variants = [{}, *([{"batch_norm": True}] if "batch_norm" in options else [])]
    if "backbone" in options:  # any torchvision classifier: each shipped architecture is a variant
        variants += [{"backbone": arch} for arch in dict.fromkeys(c.backbone for c in cards)
                     if arch != options["backbone"]]
    with torch.device("meta"):
        backbones = [build_model(model_name, num_classes=2, **variant).backbone for variant in variants]
    # the default build (variants[0]) says whether the model also takes VGG16-BN's ImageNet weights
    found = ["imagenet", *(["imagenet_bn"] if getattr(backbones[0], "paper_weights", None) else [])]
    for variant, backbone in zip(variants, backbones):
        flags = "".join(f" {k}={str(v).lower()}" for k, v in variant.items())
        found += [f"shapes ({backbone.torchvision_arch} width {c.width:g}{flags})"
                  for c in cards if c.backbone == backbone.torchvision_arch]
    return found
