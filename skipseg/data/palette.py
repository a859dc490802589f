"""PASCAL VOC class names, colour map and palette-PNG label I/O (indices, never colours)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from skipseg.errors import SkipsegError

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
IGNORE_INDEX = 255
# Modes whose pixel values are class indices. RGB masks are refused: colours are not labels.
INDEX_MODES = ("P", "L")


def voc_colormap(n: int = 256) -> np.ndarray:
    """The VOC devkit colour map (bit-interleaved), `(n, 3)` uint8; index 255 is the void colour."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


_PALETTE = voc_colormap().flatten().tolist()


def label_to_image(label: np.ndarray) -> Image.Image:
    """A `(H, W)` integer label map as a palette ("P") image with the VOC colours."""
    if label.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {label.shape}")
    image = Image.fromarray(np.asarray(label, dtype=np.uint8), mode="P")
    image.putpalette(_PALETTE)
    return image


def save_label_png(path: str | Path, label: np.ndarray) -> None:
    """Write a label map as a palette PNG (what VOC ships and what evaluation reads back)."""
    label_to_image(label).save(path, format="PNG", optimize=False)


def read_label_png(path: str | Path) -> np.ndarray:
    """Read a palette/index PNG as a `(H, W)` uint8 array of class indices.

    Raises `SkipsegError` naming the file when it is not an index image (e.g. an RGB rendering).
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.mode not in INDEX_MODES:
                raise SkipsegError(
                    f"{path}: mask is a {image.mode} image, expected a palette (P) or index (L) "
                    "image whose pixel values are class indices"
                )
            return np.array(image, dtype=np.uint8)
    except SkipsegError:
        raise
    except FileNotFoundError:
        raise SkipsegError(f"{path}: mask file not found") from None
    except OSError as exc:
        raise SkipsegError(f"{path}: unreadable mask ({exc})") from None


def colorize(label: np.ndarray) -> np.ndarray:
    """`(H, W)` indices → `(H, W, 3)` uint8 RGB with the VOC colours (for overlays and reports)."""
    return voc_colormap()[np.asarray(label, dtype=np.uint8)]
