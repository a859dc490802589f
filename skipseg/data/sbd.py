"""SBD (Hariharan et al.'s Semantic Boundaries Dataset) and train_aug = VOC train ∪ SBD − VOC val.

Layout as distributed::

    benchmark_RELEASE/dataset/img/<id>.jpg
    benchmark_RELEASE/dataset/cls/<id>.mat    GTcls.Segmentation: (H, W) class map (no void band)
    benchmark_RELEASE/dataset/inst/<id>.mat   GTinst.Segmentation: (H, W) instances; GTinst.Categories
    benchmark_RELEASE/dataset/{train,val}.txt

Any of `benchmark_RELEASE`, its `dataset` folder, or their parent may be given as the root.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from skipseg.data.check import DataError
from skipseg.data.palette import VOC_CLASSES
from skipseg.data.voc import (
    BaseSegmentationDataset,
    SegmentationDataset,
    Transforms,
    find_image,
    find_voc_root,
    read_ids,
    read_split,
)
from skipseg.errors import SkipsegError

SBD_SPLITS = ("train", "val")


def _candidates(root: Path) -> tuple[Path, ...]:
    return (root, root / "dataset", root / "benchmark_RELEASE" / "dataset")


def is_sbd_root(root: str | Path) -> bool:
    """Whether ROOT (or ROOT/dataset, ROOT/benchmark_RELEASE/dataset) holds SBD's `cls/` folder."""
    return any((c / "cls").is_dir() for c in _candidates(Path(root)))


def find_sbd_root(root: str | Path) -> Path:
    """The folder holding `cls/`, `inst/`, `img/` and the split lists."""
    root = Path(root)
    for candidate in _candidates(root):
        if (candidate / "cls").is_dir():
            return candidate
    if not root.exists():
        raise SkipsegError(f"{root}: SBD folder not found")
    raise SkipsegError(f"{root}: not SBD (no cls/ in it, in dataset/ or in benchmark_RELEASE/dataset/)")


def list_splits(root: str | Path) -> list[str]:
    """SBD's split lists that are present (train, val)."""
    folder = find_sbd_root(root)
    return [name for name in SBD_SPLITS if (folder / f"{name}.txt").is_file()]


def read_sbd_split(root: Path, split: str) -> list[str]:
    """Ids of `train`, `val`, or `trainval` (= train then val, unless a trainval.txt exists)."""
    path = root / f"{split}.txt"
    if split == "trainval" and not path.exists():
        problems, ids = [], []
        for name in SBD_SPLITS:
            try:
                ids += read_ids(root / f"{name}.txt")
            except DataError as exc:
                problems += exc.problems
        if problems:
            raise DataError(problems)
        return list(dict.fromkeys(ids))
    return read_ids(path, [*SBD_SPLITS, "trainval"])


class SBDDataset(BaseSegmentationDataset):
    """A split of SBD: 11,355 VOC2011 images, labels in the 21 VOC classes, plain (no 255 band)."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        transforms: Transforms | None = None,
        class_names: Sequence[str] | None = None,
    ):
        self.root = find_sbd_root(root)
        self.split = split
        self.transforms = transforms
        self.class_names = list(class_names) if class_names is not None else list(VOC_CLASSES)
        self.ids = read_sbd_split(self.root, split)

    def image_path(self, index: int) -> Path:
        return find_image(self.root / "img", self.ids[index])

    def mask_path(self, index: int) -> Path:
        return self.root / "cls" / f"{self.ids[index]}.mat"

    def object_path(self, index: int) -> Path:
        return self.root / "inst" / f"{self.ids[index]}.mat"

    @property
    def has_objects(self) -> bool:
        return (self.root / "inst").is_dir()


class TrainAugDataset(BaseSegmentationDataset):
    """The usual `train_aug`: VOC train ∪ SBD (train + val) − VOC val, ids sorted and unique.

    Where VOC and SBD both label an id, VOC's own label (with its void band) is used. VOC labels
    exactly trainval; after removing val that is VOC train, so an id's source is VOC iff it is in train.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train_aug",
        transforms: Transforms | None = None,
        sbd_root: str | Path | None = None,
        class_names: Sequence[str] | None = None,
    ):
        if split != "train_aug":
            raise SkipsegError(f"TrainAugDataset is the split train_aug, not {split!r}")
        if sbd_root is None:
            raise SkipsegError("train_aug needs the SBD folder (sbd_root / --sbd-root)")
        voc_root = find_voc_root(root)
        problems: list = []
        parts: dict[str, object] = {}
        # Read all three lists before failing, so one run names every missing one.
        builders = {
            "voc": lambda: SegmentationDataset(voc_root, "train", class_names=class_names),
            "voc_val": lambda: read_split(voc_root, "val"),
            "sbd": lambda: SBDDataset(sbd_root, "trainval"),
        }
        for key, build in builders.items():
            try:
                parts[key] = build()
            except DataError as exc:
                problems += exc.problems
        if problems:
            raise DataError(problems)
        self.voc: SegmentationDataset = parts["voc"]  # type: ignore[assignment]
        self.sbd: SBDDataset = parts["sbd"]  # type: ignore[assignment]
        self.sbd.class_names = self.voc.class_names
        val = set(parts["voc_val"])  # type: ignore[arg-type]

        self.root = self.voc.root
        self.sbd_root = self.sbd.root
        self.split = split
        self.transforms = transforms
        self.class_names = self.voc.class_names
        voc_index = {image_id: i for i, image_id in enumerate(self.voc.ids)}
        sbd_index = {image_id: i for i, image_id in enumerate(self.sbd.ids)}
        self.ids = sorted((voc_index.keys() | sbd_index.keys()) - val)
        self._source: list[tuple[BaseSegmentationDataset, int]] = [
            (self.voc, voc_index[i]) if i in voc_index else (self.sbd, sbd_index[i]) for i in self.ids
        ]

    def source(self, index: int) -> str:
        """"voc" or "sbd": where sample `index` comes from."""
        return "voc" if self._source[index][0] is self.voc else "sbd"

    @property
    def has_objects(self) -> bool:
        return self.voc.has_objects and self.sbd.has_objects

    def image_path(self, index: int) -> Path:
        dataset, i = self._source[index]
        return dataset.image_path(i)

    def mask_path(self, index: int) -> Path:
        dataset, i = self._source[index]
        return dataset.mask_path(i)

    def object_path(self, index: int) -> Path:
        dataset, i = self._source[index]
        return dataset.object_path(i)
