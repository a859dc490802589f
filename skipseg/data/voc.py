"""PASCAL VOC 2012 and any folder in VOC layout, behind one `torch.utils.data.Dataset` interface.

Layout (VOC as distributed, or made by `skipseg data shapes`, or by hand)::

    ROOT/JPEGImages/<id>.jpg
    ROOT/SegmentationClass/<id>.png       palette PNG: pixel value = class index, 255 = void
    ROOT/SegmentationObject/<id>.png      palette PNG: pixel value = instance number (optional)
    ROOT/ImageSets/Segmentation/<split>.txt
    ROOT/classes.txt                      optional: line i = name of class i (default: the VOC 21)

ROOT may also be `VOCdevkit` or the folder holding it. SBD and train_aug (`skipseg.data.sbd`) provide
the same interface; `skipseg.data.datasets.open_dataset` picks the right one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from skipseg.data.check import DataError, Problem, load_object_mask, load_sample
from skipseg.data.palette import IGNORE_INDEX, VOC_CLASSES
from skipseg.errors import SkipsegError

SPLIT_DIR = Path("ImageSets") / "Segmentation"
IMAGE_DIR = "JPEGImages"
CLASS_DIR = "SegmentationClass"
OBJECT_DIR = "SegmentationObject"
CLASSES_FILE = "classes.txt"
# JPEG is the layout's format; the others are accepted for hand-made folders.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG", ".bmp", ".tif", ".tiff", ".webp")

SEG11VALID_HELP = (
    "seg11valid is FCN's validation split (736 ids: VOC2011 segmentation val minus the SBD training "
    "images). skipseg does not make it up: copy data/pascal/seg11valid.txt from the FCN reference "
    "repository (github.com/shelhamer/fcn.berkeleyvision.org) to this path"
)

Transforms = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def is_voc_root(path: str | Path) -> bool:
    return (Path(path) / SPLIT_DIR).is_dir()


def find_voc_root(root: str | Path) -> Path:
    """The folder holding `ImageSets/Segmentation`: ROOT itself, ROOT/VOC2012 or ROOT/VOCdevkit/VOC2012."""
    root = Path(root)
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if is_voc_root(candidate):
            return candidate
    if not root.exists():
        raise SkipsegError(f"{root}: dataset folder not found")
    raise SkipsegError(
        f"{root}: not a dataset in VOC layout (no {SPLIT_DIR.as_posix()}, also not under VOC2012/ or "
        "VOCdevkit/VOC2012/) and not SBD (no cls/ or dataset/cls/)"
    )


def read_class_names(root: str | Path) -> list[str]:
    """Names from ROOT/classes.txt (line i = class i), else the 21 PASCAL VOC names."""
    path = Path(root) / CLASSES_FILE
    if not path.exists():
        return list(VOC_CLASSES)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError([Problem(str(path), f"unreadable class list ({exc})")]) from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if not names:
        raise DataError([Problem(str(path), "class list is empty")])
    if "" in names:
        raise DataError([Problem(str(path), f"line {names.index('') + 1} is blank (line i names class i)")])
    if len(names) > IGNORE_INDEX:
        raise DataError([Problem(str(path), f"{len(names)} classes; at most {IGNORE_INDEX} (255 is void)")])
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError([Problem(str(path), f"duplicate class names: {', '.join(duplicates)}")])
    return names


def list_splits(root: str | Path) -> list[str]:
    """The split names that have a list file in ImageSets/Segmentation."""
    return sorted(p.stem for p in (Path(root) / SPLIT_DIR).glob("*.txt"))


def read_ids(path: Path, available: Sequence[str] = ()) -> list[str]:
    """Ids listed in a split file, one per line (first word), in file order."""
    if not path.is_file():
        hint = f" (available splits: {', '.join(available)})" if available else ""
        raise DataError([Problem(str(path), f"split file not found{hint}")])
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError([Problem(str(path), f"unreadable split file ({exc})")]) from None
    ids = [line.split()[0] for line in lines if line.strip()]
    if not ids:
        raise DataError([Problem(str(path), "split file is empty (no ids)")])
    return ids


def read_split(root: str | Path, split: str) -> list[str]:
    """Ids of a split of a VOC-layout folder; a missing `seg11valid` explains where to get it."""
    root = Path(root)
    path = root / SPLIT_DIR / f"{split}.txt"
    if split == "seg11valid" and not path.is_file():
        raise DataError([Problem(str(path), f"split file not found. {SEG11VALID_HELP}")])
    return read_ids(path, list_splits(root))


def find_image(folder: Path, image_id: str) -> Path:
    """`folder/<id>.jpg`, or the first other image suffix present (the .jpg path when none is)."""
    path = folder / f"{image_id}.jpg"
    if path.exists():
        return path
    for suffix in IMAGE_SUFFIXES[1:]:
        other = folder / f"{image_id}{suffix}"
        if other.exists():
            return other
    return path


def to_tv_tensors(image: Image.Image, mask: np.ndarray) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """PIL RGB + (H, W) uint8 → uint8 [3, H, W] `tv_tensors.Image`, int64 [H, W] `tv_tensors.Mask`."""
    return F.to_image(image), tv_tensors.Mask(torch.from_numpy(mask.astype(np.int64)))


class TransformedItems:
    """`dataset[i]` = `transforms(image, mask)` of `load(i)` as tv_tensors: a uint8 [3, H, W] image
    and a uint8 [H, W] mask of class ids (the label PNG's own type); without transforms, the uint8
    image and an int64 mask (`to_tv_tensors`). Needs `load(index) -> (PIL image, (H, W) uint8 mask)`
    and `transforms`, which must not modify their inputs in place (they may be the cached copy)."""

    transforms: Transforms | None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transforms is None:
            return to_tv_tensors(*self.load(index))  # type: ignore[attr-defined]
        image, mask = DecodedCache.of(self).tensors(index, lambda: self.load(index))  # type: ignore[attr-defined]
        return self.transforms(image, mask)


class DecodedCache:
    """Decoded samples kept in memory after their first read, up to `dataset.cache_bytes` per process
    (the trainer sets it from data.cache_mb): a small dataset then decodes each file once per run
    instead of once per epoch, which on a 2-core machine is CPU the training step gets back.
    Kept in the dataset's `__dict__`, so a DataLoader worker fills its own copy."""

    def __init__(self, owner: object) -> None:
        self.owner, self.items, self.tensor_items, self.used = owner, {}, {}, 0

    @classmethod
    def of(cls, owner: object) -> "DecodedCache":
        return owner.__dict__.setdefault("_decoded", cls(owner))

    def get(self, key, decode: Callable[[], tuple[Image.Image, np.ndarray]]) -> tuple[Image.Image, np.ndarray]:
        """`decode()`'s (image, mask), from memory from the second call on while the budget lasts."""
        if key in self.items:
            return self.items[key]
        image, mask = decode()
        if self._reserve(image):
            image.load()
            self.items[key] = (image, mask)
        return image, mask

    def tensors(self, key, load: Callable[[], tuple[Image.Image, np.ndarray]]) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """`load()`'s (image, mask) as uint8 tv_tensors ([3, H, W], [H, W]), kept like `get`'s while
        the budget lasts: the conversion from PIL costs a training step more than the augmentation's
        crop does at 64 px."""
        if key in self.tensor_items:
            return self.tensor_items[key]
        image, mask = load()
        pair = tv_tensors.Image(F.to_image(image)), tv_tensors.Mask(torch.from_numpy(np.array(mask, np.uint8)))
        if self._reserve(image):
            self.tensor_items[key] = pair
        return pair

    def _reserve(self, image: Image.Image) -> bool:
        """Count a sample of `image`'s size (RGB + the uint8 mask) against the budget if it still fits."""
        size = image.width * image.height * 4
        if self.used + size > getattr(self.owner, "cache_bytes", 0):
            return False
        self.used += size
        return True


class BaseSegmentationDataset(TransformedItems, Dataset):
    """What every dataset offers. Subclasses set the attributes and the three `*_path` methods."""

    root: Path
    split: str
    ids: list[str]
    class_names: list[str]
    transforms: Transforms | None
    # Bytes of decoded samples kept in memory per process (`DecodedCache`); 0: decode every time.
    cache_bytes: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_objects(self) -> bool:
        """Whether object (instance) masks come with this dataset."""
        return True

    def image_path(self, index: int) -> Path:
        raise NotImplementedError

    def mask_path(self, index: int) -> Path:
        raise NotImplementedError

    def object_path(self, index: int) -> Path:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> tuple[Image.Image, np.ndarray]:
        """(RGB image, (H, W) uint8 class mask), raw; a defect raises the `data check` message.
        Callers must not modify what they get (it may be the cached copy)."""
        return DecodedCache.of(self).get(
            index, lambda: load_sample(self.image_path(index), self.mask_path(index), self.num_classes))

    def load_objects(self, index: int) -> np.ndarray:
        """(H, W) uint8 instance mask: 0 background, 1..N objects (255 void in VOC)."""
        if not self.has_objects:
            raise SkipsegError(f"{self.root}: this dataset has no object masks ({OBJECT_DIR}/)")
        return load_object_mask(self.object_path(index), self.image_path(index))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"samples={len(self)}, classes={self.num_classes})"
        )


class SegmentationDataset(BaseSegmentationDataset):
    """A split of a VOC-layout folder (VOC 2012 itself, the generated shapes, or your own)."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Transforms | None = None,
        class_names: Sequence[str] | None = None,
    ):
        self.root = find_voc_root(root)
        self.split = split
        self.transforms = transforms
        self.class_names = list(class_names) if class_names is not None else read_class_names(self.root)
        self.ids = read_split(self.root, split)

    @property
    def has_objects(self) -> bool:
        return (self.root / OBJECT_DIR).is_dir()

    def image_path(self, index: int) -> Path:
        return find_image(self.root / IMAGE_DIR, self.ids[index])

    def mask_path(self, index: int) -> Path:
        return self.root / CLASS_DIR / f"{self.ids[index]}.png"

    def object_path(self, index: int) -> Path:
        return self.root / OBJECT_DIR / f"{self.ids[index]}.png"
