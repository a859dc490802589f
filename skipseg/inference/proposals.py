"""Object proposals for proposal-wise inference and stage-2 training: OpenCV's selective search.

The DeconvNet paper takes the top 50 EdgeBoxes by objectness. EdgeBoxes needs a downloaded edge
model; selective search (Uijlings et al. 2013; `cv2.ximgproc.segmentation`, opencv-contrib) needs
nothing, and ranks its boxes too (hierarchy level × a pseudo-random factor). Here: selective search
on a copy of the image downscaled to `max_side` (its cost grows quickly with size), boxes scaled
back, boxes thinner than `min_size` pixels or smaller than `min_area` pixels dropped, near-duplicates
removed in rank order (IoU > `dedupe_iou` with a better-ranked box), the first `k` kept, and the whole
image put first (`whole_image`: "counted" as one of the k, "extra" on top of them, or "off").
Proposal-wise inference then extends each box (`extend_boxes`) as stage-1 training extends objects.

OpenCV draws the pseudo-random rank factors with C's `rand()`; it is seeded before every run (under
a lock, since that state is process-wide), so the same image always gives the same boxes.
Results are cached on disk per image (`cache_dir`, one `.npy` per image and settings).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import nms

from skipseg.data.instances import extend_box
from skipseg.errors import SkipsegError
from skipseg.inference.predictor import read_rgb

CACHE_VERSION = 1
METHODS = ("fast", "quality")
WHOLE_IMAGE = ("extra", "counted", "off")  # the whole image on top of the k boxes, as one of them, or not
_LOCK = threading.Lock()


def _libc_srand():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).srand
    except (OSError, AttributeError, TypeError):  # no C library to seed: ranks vary from run to run
        return None


_SRAND = _libc_srand()


def selective_search(image: np.ndarray, method: str = "fast", max_side: int | None = 200) -> np.ndarray:
    """All selective-search boxes of an (H, W, 3) uint8 RGB image, in rank order, as int64
    (x0, y0, x1, y1) in the image's pixels (x1/y1 exclusive), computed on a copy whose longer side
    is at most `max_side` (None: the image as it is)."""
    import cv2

    if method not in METHODS:
        raise SkipsegError(f"proposals.method: '{method}' is not one of {', '.join(METHODS)}")
    height, width = image.shape[:2]
    scale = 1.0 if max_side is None else min(1.0, max_side / max(height, width))
    small = np.ascontiguousarray(image[:, :, ::-1])  # OpenCV's colour conversions assume BGR
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(small, size, interpolation=cv2.INTER_AREA)
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(small)
    search.switchToSelectiveSearchFast() if method == "fast" else search.switchToSelectiveSearchQuality()
    with _LOCK:
        if _SRAND is not None:
            _SRAND(0)
        rects = np.asarray(search.process(), np.float64).reshape(-1, 4)  # (x, y, w, h) on `small`
    sy, sx = height / small.shape[0], width / small.shape[1]
    boxes = np.stack([np.floor(rects[:, 0] * sx), np.floor(rects[:, 1] * sy),
                      np.ceil((rects[:, 0] + rects[:, 2]) * sx), np.ceil((rects[:, 1] + rects[:, 3]) * sy)], 1)
    return np.clip(boxes, 0, [width, height, width, height]).astype(np.int64)


def rank_boxes(boxes: np.ndarray, size: tuple[int, int], k: int, dedupe_iou: float = 0.9,
               min_size: int = 10, min_area: int = 0, whole_image: str = "counted") -> np.ndarray:
    """`boxes` (best first) without thin, small and near-duplicate boxes, `k` at most, the whole
    image first unless `whole_image` is "off" ("counted": it is one of the k; "extra": k + 1 boxes)."""
    if whole_image not in WHOLE_IMAGE:
        raise SkipsegError(f"whole_image: '{whole_image}' is not one of {', '.join(WHOLE_IMAGE)}")
    height, width = size
    whole = np.array([[0, 0, width, height]], np.int64)
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    sides = boxes[:, 2:] - boxes[:, :2]
    keep = ((sides[:, 0] >= min(min_size, width)) & (sides[:, 1] >= min(min_size, height))
            & (sides[:, 0] * sides[:, 1] >= min(min_area, width * height)))
    with_whole = whole_image != "off"
    candidates = np.concatenate([whole, boxes[keep]]) if with_whole else boxes[keep]
    scores = -torch.arange(len(candidates), dtype=torch.float32)  # rank order as the score
    ranked = candidates[nms(torch.from_numpy(candidates).float(), scores, dedupe_iou).numpy()]  # by score
    return ranked[: k + 1] if whole_image == "extra" else ranked[:k]


def extend_boxes(boxes: np.ndarray, factor: float, size: tuple[int, int]) -> np.ndarray:
    """Each box scaled by `factor` about its centre and clipped to an image of `size` = (H, W)
    (`data.instances.extend_box`, the stage-1 crops' rule), int64 `[K, 4]`."""
    if not factor >= 1.0:
        raise SkipsegError(f"proposal extension: must be >= 1 (the paper's 1.2), got {factor}")
    return np.array([extend_box(box, factor, size) for box in np.asarray(boxes).reshape(-1, 4)], np.int64).reshape(-1, 4)


def _cache_key(image: np.ndarray | str | Path, settings: str) -> str:
    digest = hashlib.sha1(f"v{CACHE_VERSION}|{settings}|".encode())
    if isinstance(image, np.ndarray):
        digest.update(f"array|{image.shape}|{image.dtype}|".encode())
        digest.update(np.ascontiguousarray(image).tobytes())
    else:
        path = Path(image).resolve()
        stat = path.stat()
        digest.update(f"file|{path}|{stat.st_mtime_ns}|{stat.st_size}".encode())
    return digest.hexdigest()


def proposals(image: np.ndarray | str | Path, k: int = 50, cache_dir: str | Path | None = None,
              method: str = "fast", max_side: int | None = 200, dedupe_iou: float = 0.9,
              min_size: int = 10, min_area: int = 0, whole_image: str = "counted") -> np.ndarray:
    """Up to `k` object proposals of an image (an (H, W, 3) uint8 RGB array or a file), best first:
    int64 `[K', 4]` (x0, y0, x1, y1), x1/y1 exclusive, the whole image first (`rank_boxes`).

    With `cache_dir`, the boxes are stored there as `<sha1>.npy`, keyed by the file's path, mtime
    and size (or an array's bytes) and every setting, and read back on the next call.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SkipsegError(f"proposals.k: must be an integer >= 1, got {k!r}")
    if method not in METHODS:
        raise SkipsegError(f"proposals.method: '{method}' is not one of {', '.join(METHODS)}")
    if isinstance(image, (str, Path)) and not Path(image).is_file():
        raise SkipsegError(f"{image}: image file not found")
    settings = f"{k}|{method}|{max_side}|{dedupe_iou}|{min_size}|{min_area}|{whole_image}"
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{_cache_key(image, settings)}.npy"
        if path.is_file():
            try:
                return np.load(path)
            except (OSError, ValueError):  # a truncated file from an interrupted run: recompute
                pass
    pixels = read_rgb(image) if not isinstance(image, np.ndarray) else image
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise SkipsegError(f"proposals: expected an (H, W, 3) uint8 RGB image, got {pixels.shape} {pixels.dtype}")
    boxes = rank_boxes(selective_search(pixels, method, max_side), pixels.shape[:2], k, dedupe_iou, min_size,
                       min_area, whole_image)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npy")
        np.save(tmp, boxes)
        os.replace(tmp, path)
    return boxes
