"""SBD reader on .mat files shaped like the real ones, and train_aug = VOC train ∪ SBD − VOC val."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image

from skipseg.data.check import DataError

from skipseg.data.datasets import check_dataset
from skipseg.data.palette import VOC_CLASSES
from skipseg.data.sbd import SBDDataset, TrainAugDataset, is_sbd_root
from skipseg.data.datasets import open_dataset
from skipseg.errors import SkipsegError



def sbd_sample(rng: np.random.Generator, height: int, width: int):
    """Background and two overlapping rectangles of random VOC classes; plain labels (no void band)."""
    label = np.zeros((height, width), np.uint8)
    objects = np.zeros((height, width), np.uint8)
    for number, cls in enumerate(rng.choice(np.arange(1, 21), size=2, replace=False), start=1):
        h, w = rng.integers(height // 4, height // 2 + 1), rng.integers(width // 4, width // 2 + 1)
        top, left = rng.integers(0, height - h), rng.integers(0, width - w)
        label[top : top + h, left : left + w] = cls
        objects[top : top + h, left : left + w] = number
    image = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
    return image, label, objects


def _boundaries(label: np.ndarray, count: int) -> np.ndarray:
    """A MATLAB cell array (count x 1) of sparse logical boundary maps, as in the real files."""
    cell = np.empty((count, 1), dtype=object)
    for k in range(count):
        region = label == k + 1
        edge = region ^ np.pad(region, 1)[1:-1, 2:] | region ^ np.pad(region, 1)[2:, 1:-1]
        cell[k, 0] = scipy.sparse.csc_matrix(edge & region)
    return cell


def write_sbd_sample(folder: Path, image_id: str, image: np.ndarray, label: np.ndarray, objects: np.ndarray):
    """img/<id>.jpg, cls/<id>.mat (GTcls) and inst/<id>.mat (GTinst) with the real files' fields."""
    Image.fromarray(image).save(folder / "img" / f"{image_id}.jpg", quality=95)
    scipy.io.savemat(
        folder / "cls" / f"{image_id}.mat",
        {
            "GTcls": {
                "Segmentation": label,
                "Boundaries": _boundaries(label, 20),
                "CategoriesPresent": np.unique(label[label > 0]).astype(np.uint8),
            }
        },
    )
    count = int(objects.max())
    majority = [np.bincount(label[objects == i], minlength=1).argmax() for i in range(1, count + 1)]
    categories = np.array(majority, np.uint8)
    scipy.io.savemat(
        folder / "inst" / f"{image_id}.mat",
        {
            "GTinst": {
                "Segmentation": objects,
                "Boundaries": _boundaries(objects, count),
                "Categories": categories,
            }
        },
    )


def write_sbd(root: Path, splits: dict[str, list[str]], seed: int = 1, size=(37, 53)) -> dict:
    """benchmark_RELEASE/dataset with the given split lists; returns {id: (image, label, objects)}."""
    folder = root / "benchmark_RELEASE" / "dataset"
    for name in ("img", "cls", "inst"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for image_id in sorted({i for ids in splits.values() for i in ids}):
        image, label, objects = sbd_sample(rng, *size)
        write_sbd_sample(folder, image_id, image, label, objects)
        written[image_id] = (image, label, objects)
    for name, ids in splits.items():
        (folder / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return written


SBD_SPLITS = {"train": ["2008_000002", "2008_000003", "2008_000004"], "val": ["2007_000033", "2008_000008"]}


@pytest.fixture
def sbd(tmp_path):
    return tmp_path / "sbd", write_sbd(tmp_path / "sbd", SBD_SPLITS)


def test_fixture_matches_the_real_mat_structure(sbd):
    root, _ = sbd
    cls = scipy.io.loadmat(root / "benchmark_RELEASE/dataset/cls/2008_000002.mat")["GTcls"]
    assert set(cls.dtype.names) == {"Segmentation", "Boundaries", "CategoriesPresent"}
    assert cls["Segmentation"][0, 0].dtype == np.uint8
    assert cls["Boundaries"][0, 0].shape == (20, 1) and scipy.sparse.issparse(cls["Boundaries"][0, 0][0, 0])
    inst = scipy.io.loadmat(root / "benchmark_RELEASE/dataset/inst/2008_000002.mat")["GTinst"]
    assert set(inst.dtype.names) == {"Segmentation", "Boundaries", "Categories"}


@pytest.mark.parametrize("given", ["", "benchmark_RELEASE", "benchmark_RELEASE/dataset"])
def test_sbd_reader(sbd, given):
    root, written = sbd
    assert is_sbd_root(root / given)
    dataset = SBDDataset(root / given, "train")
    assert dataset.root == root / "benchmark_RELEASE" / "dataset"
    assert dataset.ids == SBD_SPLITS["train"]
    assert dataset.class_names == list(VOC_CLASSES) and dataset.num_classes == 21
    for index, image_id in enumerate(dataset.ids):
        image, mask = dataset.load(index)
        _, label, objects = written[image_id]
        assert image.mode == "RGB" and image.size == (53, 37)
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, label)
        assert 255 not in mask  # no void band in SBD
        np.testing.assert_array_equal(dataset.load_objects(index), objects)
    image, mask = dataset[0]
    assert image.shape == (3, 37, 53) and mask.shape == (37, 53)


def test_sbd_splits(sbd):
    root, _ = sbd
    assert SBDDataset(root, "val").ids == SBD_SPLITS["val"]
    assert SBDDataset(root, "trainval").ids == SBD_SPLITS["train"] + SBD_SPLITS["val"]
    with pytest.raises(DataError, match="split file not found"):
        SBDDataset(root, "test")
    assert isinstance(open_dataset(root, "val"), SBDDataset)


def test_train_aug_union_dedup_minus_val(make_tiny_voc, tmp_path):
    voc = make_tiny_voc(
        "VOCdevkit/VOC2012",
        splits={
            "train": ["2007_000032", "2008_000002", "2008_000003"],
            "val": ["2007_000033", "2007_000039"],
        },
    )
    sbd_root = tmp_path / "sbd"
    written = write_sbd(
        sbd_root,
        {
            # 2008_000002: in VOC train too (VOC label wins); 2007_000033: VOC val (dropped)
            "train": ["2008_000002", "2008_000010", "2007_000033"],
            # 2008_000010 again (dedup); 2007_000039: VOC val (dropped)
            "val": ["2008_000011", "2008_000010", "2007_000039", "2008_000003"],
        },
    )
    dataset = open_dataset(tmp_path, "train_aug", sbd_root=sbd_root)
    assert isinstance(dataset, TrainAugDataset)
    assert dataset.ids == ["2007_000032", "2008_000002", "2008_000003", "2008_000010", "2008_000011"]
    assert [dataset.source(i) for i in range(len(dataset))] == ["voc", "voc", "voc", "sbd", "sbd"]
    assert dataset.class_names == list(VOC_CLASSES)
    for index, image_id in enumerate(dataset.ids):
        _, mask = dataset.load(index)
        expected = voc.labels[image_id] if dataset.source(index) == "voc" else written[image_id][1]
        np.testing.assert_array_equal(mask, expected)
        objects = dataset.load_objects(index)
        assert objects.shape == mask.shape
    assert dataset[3][1].shape == (37, 53) and dataset[0][1].shape == (45, 61)
    assert check_dataset(tmp_path, split="train_aug", sbd_root=sbd_root) == []


def test_train_aug_needs_sbd_and_names_every_missing_list(make_tiny_voc, tmp_path):
    voc = make_tiny_voc()
    with pytest.raises(SkipsegError, match="sbd"):
        TrainAugDataset(voc.root)
    sbd_root = tmp_path / "sbd"
    write_sbd(sbd_root, {"train": ["2008_000002"]})
    voc.split_file("val").unlink()
    with pytest.raises(DataError) as info:
        TrainAugDataset(voc.root, sbd_root=sbd_root)
    assert [Path(p.path).name for p in info.value.problems] == ["val.txt", "val.txt"]


def test_broken_mat_files_are_reported(sbd):
    root, _ = sbd
    folder = root / "benchmark_RELEASE" / "dataset"
    scipy.io.savemat(folder / "cls" / "2008_000003.mat", {"Other": np.zeros((3, 3))})
    label = scipy.io.loadmat(folder / "cls" / "2008_000004.mat")["GTcls"]["Segmentation"][0, 0]
    label[0, 0] = 40
    scipy.io.savemat(folder / "cls" / "2008_000004.mat", {"GTcls": {"Segmentation": label}})
    (folder / "inst" / "2008_000008.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")

    problems = check_dataset(root)
    messages = {(Path(p.path).relative_to(folder).as_posix(), p.message) for p in problems}
    no_struct = "unreadable mask (ValueError: no 'GTcls' struct in the file (variables: Other))"
    assert ("cls/2008_000003.mat", no_struct) in messages
    assert ("cls/2008_000004.mat", "label values outside [0, 21) and 255: 40") in messages
    assert any(path == "inst/2008_000008.mat" and "unreadable object mask" in msg for path, msg in messages)
    assert len(problems) == 3
    dataset = SBDDataset(root, "train")
    with pytest.raises(DataError) as info:
        dataset.load(2)
    assert str(info.value) == str(next(p for p in problems if "2008_000004" in p.path))


def test_sbd_without_split_lists(sbd):
    root, _ = sbd
    for name in ("train", "val"):
        (root / "benchmark_RELEASE" / "dataset" / f"{name}.txt").unlink()
    [problem] = check_dataset(root)
    assert problem.message == "no split files (train.txt, val.txt)"
