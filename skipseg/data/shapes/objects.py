"""The embedded ImageNet: single-object classification images of all 20 shape families.

What ImageNet is to PASCAL VOC, this is to the generated segmentation data: a larger label space
(all 20 families, whatever subset a segmentation task uses), one labelled object per image at a
random scale, position and rotation, over the same cluttered backgrounds and distractors. Images
come from the segmentation renderer with a stream of their own: image `i` of split `s` is drawn
from `np.random.default_rng([seed, i, STREAMS[s]])`, never from `[seed, i]` as segmentation
image `i` is, so no pretraining image is a segmentation image of any split (tested). Each image
goes through the JPEG encoding the dataset writer stores segmentation images with, at the quality
the renderer draws for it: a classifier trained on the renderer's raw pixels does not recognise the
same objects once they are compressed (README, "The embedded ImageNet").
"""
from __future__ import annotations

import io
import multiprocessing
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from skipseg.data.shapes.geometry import SHAPE_NAMES
from skipseg.data.shapes.render import NUM_CLASSES, SceneSpec, render_scene
from skipseg.data.shapes.writer import jpeg_options
from skipseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD

STREAMS = {"train": 0x5EED_0001, "val": 0x5EED_0002}  # distinct from the segmentation's [seed, i]
CLASS_NAMES = list(SHAPE_NAMES)  # label k = shape family k + 1 of the segmentation data
# One object per image, from a quarter of the side to nearly filling it; full clutter.
OBJECT_SCENE = SceneSpec(classes=NUM_CLASSES - 1, min_scale=0.25, max_scale=0.9, max_objects=1, clutter=1.0)
_MAX_TRIES = 8  # a placement can miss the image; the next sub-stream draws another scene


@dataclass(frozen=True)
class ObjectImages:
    """Which images a split holds: `count` images of `size` px drawn with `seed`."""

    split: str
    count: int
    size: int
    seed: int = 0


def render_object(seed: int, index: int, size: int, split: str = "train", stored: bool = True
                  ) -> tuple[np.ndarray, int]:
    """Image `index` of a classification split: RGB uint8 (size, size, 3) and its label in [0, 20).
    `stored=False`: the renderer's pixels before the JPEG encoding (to measure what it changes)."""
    if split not in STREAMS:
        raise ValueError(f"split must be one of {sorted(STREAMS)}, got {split!r}")
    for attempt in range(_MAX_TRIES):
        rgb, cls_map, _, quality = render_scene(seed, index, size, OBJECT_SCENE, stream=(STREAMS[split], attempt))
        counts = np.bincount(cls_map.ravel(), minlength=256)[1:NUM_CLASSES]
        if counts.any():  # the one object is visible: its class is the label
            return (as_stored(rgb, quality) if stored else np.asarray(rgb)), int(counts.argmax())
    raise RuntimeError(f"no visible object in {_MAX_TRIES} scenes for image {index} (seed {seed}, size {size})")


def as_stored(rgb: Image.Image, quality: int) -> np.ndarray:
    """The pixels a generated image has once written as the dataset writer writes it and read back."""
    buffer = io.BytesIO()
    rgb.save(buffer, **jpeg_options(quality))
    return np.asarray(Image.open(buffer).convert("RGB"))


def _render_chunk(args: tuple[int, int, int, int, str]) -> tuple[np.ndarray, np.ndarray]:
    seed, start, stop, size, split = args
    images = np.empty((stop - start, size, size, 3), np.uint8)
    labels = np.empty(stop - start, np.int64)
    for row, index in enumerate(range(start, stop)):
        images[row], labels[row] = render_object(seed, index, size, split)
    return images, labels


def render_split(spec: ObjectImages, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """All images of a split as `(N, H, W, 3)` uint8 and `(N,)` int64 labels, rendered in `workers`
    processes (the result is the same for any number)."""
    step = 256
    chunks = [(spec.seed, i, min(i + step, spec.count), spec.size, spec.split) for i in range(0, spec.count, step)]
    if workers > 1 and len(chunks) > 1:
        with multiprocessing.get_context().Pool(min(workers, len(chunks))) as pool:
            parts = pool.map(_render_chunk, chunks)
    else:
        parts = [_render_chunk(chunk) for chunk in chunks]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class ObjectClassification(Dataset):
    """A classification split held in memory (64-px images: 12 KB each), ImageNet-normalised.

    `flip`: random horizontal flips drawn from torch's RNG (the trainer seeds it per sample).
    """

    def __init__(self, spec: ObjectImages, flip: bool = False, workers: int = 2) -> None:
        self.spec, self.flip = spec, flip
        images, labels = render_split(spec, workers)
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2)  # [N, 3, H, W] uint8
        self.labels = torch.from_numpy(labels)
        self.class_names = CLASS_NAMES
        self.num_classes = len(CLASS_NAMES)
        self._mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
        self._std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.flip and bool(torch.rand(()) < 0.5):
            image = image.flip(-1)
        return (image.float() - self._mean) / self._std, self.labels[index]
