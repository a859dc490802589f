"""Opening a dataset by its folder (VOC layout, SBD or train_aug) and checking one whole: the entry
points above the dataset classes (`voc`, `sbd`) and the sample checks they share (`check`)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from skipseg.data import sbd, voc
from skipseg.data.check import DataError, Problem, check_entry
from skipseg.errors import SkipsegError


def open_dataset(
    root: str | Path,
    split: str,
    transforms: voc.Transforms | None = None,
    sbd_root: str | Path | None = None,
) -> voc.BaseSegmentationDataset:
    """A VOC-layout folder, SBD (ROOT holding `cls/` or `dataset/cls/`), or `train_aug` (VOC + SBD)."""
    if split == "train_aug":
        if sbd_root is None:
            raise SkipsegError(
                "split train_aug is VOC train + SBD minus VOC val: give the SBD folder too "
                "(sbd_root / --sbd-root)"
            )
        return sbd.TrainAugDataset(root, sbd_root=sbd_root, transforms=transforms)
    if sbd.is_sbd_root(root):
        return sbd.SBDDataset(root, split, transforms=transforms)
    return voc.SegmentationDataset(root, split, transforms=transforms)


def check_dataset(
    root: str | Path,
    split: str | None = None,
    sbd_root: str | Path | None = None,
    num_classes: int | None = None,
    workers: int | None = None,
) -> list[Problem]:
    """Every problem of a dataset (VOC layout, SBD or train_aug), in file order, each reported once.

    `split=None` checks every split listed in `ImageSets/Segmentation` (for SBD: train and val; with
    `sbd_root`, SBD's splits too). `num_classes` defaults to the dataset's class count. Files are
    fully decoded, `workers` threads at a time (default: up to 8).
    """
    problems: list[Problem] = []
    datasets: list[voc.BaseSegmentationDataset] = []

    def attempt(build) -> None:
        try:
            datasets.append(build())
        except DataError as exc:  # a broken split list or class list: report it, check the rest
            problems.extend(exc.problems)

    class_names: list[str] | None = list(voc.VOC_CLASSES)
    if sbd.is_sbd_root(root):
        if split == "train_aug":
            raise SkipsegError(f"{root}: train_aug needs the VOC folder as ROOT and SBD as --sbd-root")
        splits = [split] if split else sbd.list_splits(root)
        if not splits:
            problems.append(Problem(str(sbd.find_sbd_root(root)), "no split files (train.txt, val.txt)"))
        for name in splits:
            attempt(lambda name=name: sbd.SBDDataset(root, name))
    else:
        voc_root = voc.find_voc_root(root)
        try:
            class_names = voc.read_class_names(voc_root)
        except DataError as exc:
            problems.extend(exc.problems)
            class_names = None
        names = class_names or list(voc.VOC_CLASSES)
        if split == "train_aug":
            if sbd_root is None:
                raise SkipsegError("train_aug needs the SBD folder too (--sbd-root DIR)")
            attempt(lambda: sbd.TrainAugDataset(voc_root, sbd_root=sbd_root, class_names=names))
        else:
            splits = [split] if split else voc.list_splits(voc_root)
            if not splits:
                problems.append(Problem(str(voc_root / voc.SPLIT_DIR), "no split files (*.txt)"))
            for name in splits:
                attempt(lambda name=name: voc.SegmentationDataset(voc_root, name, class_names=names))
            if sbd_root is not None and split is None:
                for name in sbd.list_splits(sbd_root):
                    attempt(lambda name=name: sbd.SBDDataset(sbd_root, name, class_names=names))

    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    # A sample listed in several splits (train and trainval) is checked once.
    entries: dict[tuple[Path, Path, Path | None], None] = {}
    for dataset in datasets:
        for index in range(len(dataset)):
            objects = dataset.object_path(index) if dataset.has_objects else None
            entries[(dataset.image_path(index), dataset.mask_path(index), objects)] = None

    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    if workers > 1 and len(entries) > 1:
        with ThreadPoolExecutor(workers) as pool:  # decoding releases the GIL
            results = list(pool.map(lambda entry: check_entry(entry, num_classes), entries))
    else:
        results = [check_entry(entry, num_classes) for entry in entries]
    for result in results:
        problems.extend(result)
    return list(dict.fromkeys(problems))  # same file under two ids/splits: once
