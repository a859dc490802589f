"""DeconvNet's two-stage training data (Noh et al. 2015, §4.2 and §6.1), made from any dataset with
object masks (`base.load_objects`): VOC `SegmentationObject`, SBD `inst`, the generated shapes.

- Stage 1, `InstanceCropDataset`: one crop per ground-truth object, its tight box extended 1.2×
  around the box centre, so the object sits in the middle; only that object keeps its class.
- Stage 2, `ProposalCropDataset`: crops of object proposals (extended 1.2× the same way) whose box IoU
  with some object's tight box reaches `min_iou`; every label is kept.
- `balanced_indices` / `balanced`: repeat the samples of rare classes (the paper's "redundant
  examples"): each sample `ceil(max_count / count_of_its_class)` times.

A crop window reaching outside the image is padded (image: the ImageNet mean pixel, mask: 255, so
padding never counts in the loss) and the object stays centred; `pad_outside=False` clips it to the
image instead. Both datasets have SegmentationDataset's interface (`ids`, `class_names`,
`num_classes`, `image_path`, `load`, `__getitem__` through `transforms`, e.g.
`augmentation.train_transforms(224, scale_range=None, flip=True, resize=250)` for the paper's augmentation).
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage
from torch.utils.data import Dataset

from skipseg.data.palette import IGNORE_INDEX
from skipseg.data.transforms import IMAGENET_MEAN
from skipseg.data.voc import BaseSegmentationDataset, DecodedCache, TransformedItems, Transforms
from skipseg.errors import SkipsegError

MEAN_PIXEL = tuple(int(round(255 * m)) for m in IMAGENET_MEAN)
Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), pixels, x1/y1 exclusive
_EIGHT = np.ones((3, 3), bool)


@dataclass(frozen=True)
class CropSample:
    """One training crop: image `index` of the base dataset, crop `window`, the class it was made
    for (`label`, used for class balance) and the object's instance id (0 for proposal crops)."""

    index: int
    window: Box
    label: int
    instance: int = 0


def object_boxes(classes: np.ndarray, objects: np.ndarray) -> list[tuple[int, int, Box]]:
    """`(instance id, class, tight box)` of every object: the class is the most frequent non-void,
    non-background class under the instance's pixels; instances without one are left out."""
    inside = (objects != 0) & (objects != IGNORE_INDEX) & (classes != IGNORE_INDEX) & (classes != 0)
    pairs = np.bincount(objects[inside].astype(np.int64) * 256 + classes[inside], minlength=256 * 256)
    votes = pairs.reshape(256, 256)  # [instance, class]
    out = []
    for instance, slices in enumerate(ndimage.find_objects(objects), start=1):
        if slices is None or instance == IGNORE_INDEX or not votes[instance].any():
            continue
        ys, xs = slices
        out.append((instance, int(votes[instance].argmax()), (xs.start, ys.start, xs.stop, ys.stop)))
    return out


def extend_box(box: Sequence[float], factor: float, size: tuple[int, int] | None = None) -> Box:
    """`box` scaled by `factor` about its centre, rounded to pixels (at least 1×1); clipped to an
    image of `size` = (height, width) when given, else free to reach outside it."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = max(1, round((x1 - x0) * factor)), max(1, round((y1 - y0) * factor))
    left, top = round((x0 + x1 - w) / 2), round((y0 + y1 - h) / 2)
    window = (left, top, left + w, top + h)
    if size is not None:
        height, width = size
        window = (max(0, window[0]), max(0, window[1]), min(width, window[2]), min(height, window[3]))
    return window


def crop_padded(array: np.ndarray, window: Box, fill) -> np.ndarray:
    """`array[y0:y1, x0:x1]` where the window may reach outside; outside pixels get `fill`."""
    x0, y0, x1, y1 = window
    height, width = array.shape[:2]
    out = np.empty((y1 - y0, x1 - x0) + array.shape[2:], array.dtype)
    out[...] = fill
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = array[sy0:sy1, sx0:sx1]
    return out


def centre_object_label(classes: np.ndarray, objects: np.ndarray, instance: int, label: int) -> np.ndarray:
    """Stage-1 labels: the object `instance` → `label`, every other pixel → background 0, void 255
    kept only where it still means "uncertain".

    A void band separates the regions on its two sides. Once the other objects are background, a
    band between two of them (or between one and the background) separates background from
    background and becomes background too; a band touching the centre object may hide part of it and
    stays void. Rule: an 8-connected void component that touches the centre object stays 255, every
    other void component becomes 0. Where the centre object touches another object their bands
    merge and all of the merged band stays void: conservative, never a wrong label.
    """
    mine = objects == instance
    out = np.where(mine, np.uint8(label), np.uint8(0))
    void = (classes == IGNORE_INDEX) | (objects == IGNORE_INDEX)
    if void.any():
        components, _ = ndimage.label(void, structure=_EIGHT)
        touching = np.unique(components[ndimage.binary_dilation(mine, structure=_EIGHT) & void])
        out[np.isin(components, touching[touching > 0])] = IGNORE_INDEX
    return out


def _map_in_order(fn: Callable[[int], list], n: int, workers: int) -> list:
    """`[*fn(0), *fn(1), ...]`, `workers` threads at a time (decoding releases the GIL); in order."""
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(fn, range(n)))
    else:
        parts = [fn(i) for i in range(n)]
    return [item for part in parts for item in part]


def _in_processes(fn: Callable[[Path], np.ndarray], items: list[Path], workers: int) -> list[np.ndarray]:
    """`[fn(item) for item in items]`, in `workers` processes when more than one (in order). For the
    proposals: OpenCV's selective search seeds C's process-wide `rand()` under a lock, so threads
    would take turns; `fn` must pickle (e.g. a `functools.partial` of `inference.proposals.proposals`).
    Spawned, not forked: the parent's torch and OpenCV thread pools do not survive a fork."""
    if workers > 1 and len(items) > 1:
        with multiprocessing.get_context("spawn").Pool(min(workers, len(items))) as pool:
            return pool.map(fn, items, chunksize=max(1, len(items) // (8 * workers)))
    return [fn(item) for item in items]


class _CropDataset(TransformedItems, Dataset):
    """What both stages share: samples → (cropped image, cropped mask) → transforms."""

    samples: list[CropSample]
    kind = "crop"

    def __init__(self, base: BaseSegmentationDataset, transforms: Transforms | None, pad_outside: bool) -> None:
        self.base, self.transforms, self.pad_outside = base, transforms, pad_outside
        self.class_names = list(base.class_names)
        self.root = getattr(base, "root", None)
        self.split = f"{getattr(base, 'split', '?')}:{self.kind}"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def ids(self) -> list[str]:
        """`<image id>@x0,y0,x1,y1` per sample (the crop window in the image)."""
        return [f"{self.base.ids[s.index]}@{','.join(map(str, s.window))}" for s in self.samples]

    @property
    def sample_classes(self) -> list[int]:
        """The class each sample was made for (its object's), for `balanced_indices`."""
        return [s.label for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def image_path(self, index: int) -> Path:
        return self.base.image_path(self.samples[index].index)

    def _label(self, sample: CropSample, classes: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def cache_bytes(self) -> int:
        """Crops are deterministic: kept in memory like the base's decoded images, in a budget of the same size."""
        return getattr(self.base, "cache_bytes", 0)

    def load(self, index: int) -> tuple[Image.Image, np.ndarray]:
        """(cropped RGB image, cropped (h, w) uint8 mask) of sample `index`, before the transforms.
        Callers must not modify what they get (it may be the cached copy)."""
        sample = self.samples[index]
        return DecodedCache.of(self).get(sample, lambda: self._crop(sample))

    def _crop(self, sample: CropSample) -> tuple[Image.Image, np.ndarray]:
        image, classes = self.base.load(sample.index)
        mask = self._label(sample, classes)
        window = sample.window
        if not self.pad_outside:
            window = extend_box(window, 1.0, classes.shape)
        pixels = crop_padded(np.asarray(image), window, MEAN_PIXEL)
        return Image.fromarray(pixels), crop_padded(mask, window, IGNORE_INDEX)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base={self.base!r}, samples={len(self)})"


class InstanceCropDataset(_CropDataset):
    """Stage 1: one sample per ground-truth object, centred in its tight box extended `extend`×;
    labels from `centre_object_label`. Reads every mask once at construction (`workers` threads)."""

    kind = "instances"

    def __init__(self, base: BaseSegmentationDataset, extend: float = 1.2, transforms: Transforms | None = None,
                 pad_outside: bool = True, workers: int = 0) -> None:
        if not getattr(base, "has_objects", False):
            raise SkipsegError(f"{getattr(base, 'root', base)}: stage-1 crops need object masks "
                               "(SegmentationObject/ or SBD inst/)")
        if not extend >= 1.0:
            raise SkipsegError(f"extend: must be >= 1 (the paper's 1.2), got {extend}")
        super().__init__(base, transforms, pad_outside)
        self.extend = extend

        def scan(i: int) -> list[CropSample]:
            _, classes = base.load(i)
            return [CropSample(i, extend_box(box, extend), cls, inst)
                    for inst, cls, box in object_boxes(classes, base.load_objects(i))]

        self.samples = _map_in_order(scan, len(base), workers)

    def _label(self, sample: CropSample, classes: np.ndarray) -> np.ndarray:
        objects = self.base.load_objects(sample.index)
        return centre_object_label(classes, objects, sample.instance, sample.label)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix `[len(a), len(b)]` of (x0, y0, x1, y1) boxes (x1/y1 exclusive)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


class ProposalCropDataset(_CropDataset):
    """Stage 2: crops of the proposals whose box IoU with some object's tight box is >= `min_iou`
    (the sample's class: that of the best-matching object), extended `extend`× like stage 1, all
    labels kept. `proposals_fn(image_path) -> [K, 4]` boxes in rank order, e.g.
    `functools.partial(skipseg.inference.proposals.proposals, k=200, cache_dir=...)`;
    `max_per_image` keeps the first that many selected proposals of each image (None: all);
    `search_workers` processes compute the proposals (`proposals_fn` must then pickle)."""

    kind = "proposals"

    def __init__(self, base: BaseSegmentationDataset, proposals_fn: Callable[[Path], np.ndarray],
                 min_iou: float = 0.5, max_per_image: int | None = None, extend: float = 1.2,
                 transforms: Transforms | None = None, pad_outside: bool = True, workers: int = 0,
                 search_workers: int = 1) -> None:
        if not getattr(base, "has_objects", False):
            raise SkipsegError(f"{getattr(base, 'root', base)}: matching proposals needs object masks")
        if not 0.0 < min_iou <= 1.0:
            raise SkipsegError(f"min_iou: must be in (0, 1], got {min_iou}")
        if max_per_image is not None and max_per_image < 1:
            raise SkipsegError(f"max_per_image: must be >= 1 or null, got {max_per_image}")
        super().__init__(base, transforms, pad_outside)
        self.min_iou, self.max_per_image, self.extend = min_iou, max_per_image, extend
        proposed = _in_processes(proposals_fn, [base.image_path(i) for i in range(len(base))], search_workers)

        def scan(i: int) -> list[CropSample]:
            _, classes = base.load(i)
            found = object_boxes(classes, base.load_objects(i))
            boxes = np.asarray(proposed[i]).reshape(-1, 4)
            if not found or not len(boxes):
                return []
            iou = box_iou(boxes, [box for _, _, box in found])  # [K, G]
            chosen = np.flatnonzero(iou.max(axis=1) >= min_iou)[:max_per_image]
            best = iou.argmax(axis=1)
            return [CropSample(i, extend_box(boxes[k], extend), found[best[k]][1]) for k in chosen]

        self.samples = _map_in_order(scan, len(base), workers)

    def _label(self, sample: CropSample, classes: np.ndarray) -> np.ndarray:
        return classes


def repeat_factors(sample_classes: Sequence[int]) -> np.ndarray:
    """How often to repeat each sample: `ceil(max_count / count_of_its_class)`, so every class
    appears about as often as the most frequent one (the most frequent class: once)."""
    classes = np.asarray(sample_classes, np.int64)
    if not len(classes):
        return np.zeros(0, np.int64)
    counts = np.bincount(classes)
    return np.ceil(counts.max() / counts[classes]).astype(np.int64)


def balanced_indices(dataset: Dataset, seed: int | None = None) -> list[int]:
    """Sample indices with rare classes' samples repeated (`repeat_factors` of
    `dataset.sample_classes`), in order, or shuffled by `numpy.random.default_rng(seed)`; for a
    `torch.utils.data.Subset` or `Resampled` (see `balanced`). Deterministic."""
    classes = getattr(dataset, "sample_classes", None)
    if classes is None:
        raise SkipsegError(f"{type(dataset).__name__}: class balance needs `sample_classes` "
                           "(InstanceCropDataset / ProposalCropDataset)")
    indices = np.repeat(np.arange(len(classes)), repeat_factors(classes))
    if seed is not None:
        indices = np.random.default_rng(seed).permutation(indices)
    return indices.tolist()


class Resampled(_CropDataset):
    """A crop dataset's samples picked by `indices` (e.g. `balanced_indices`), same interface."""

    kind = "resampled"

    def __init__(self, dataset: _CropDataset, indices: Sequence[int]) -> None:
        super().__init__(dataset.base, dataset.transforms, dataset.pad_outside)
        self.source, self.indices = dataset, list(indices)
        self.samples = [dataset.samples[i] for i in self.indices]

    def _label(self, sample: CropSample, classes: np.ndarray) -> np.ndarray:
        return self.source._label(sample, classes)


def balanced(dataset: _CropDataset, seed: int | None = None) -> Resampled:
    """The dataset with rare classes' samples repeated (`balanced_indices`), same interface."""
    return Resampled(dataset, balanced_indices(dataset, seed))
