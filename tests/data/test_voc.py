"""VOC-layout reader: ids, class names, masks as palette indices, object masks, image modes, splits."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from skipseg.data.check import DataError
from skipseg.data.palette import VOC_CLASSES
from skipseg.data.augmentation import train_transforms
from skipseg.data.transforms import eval_transforms
from skipseg.data.voc import SegmentationDataset
from skipseg.data.datasets import open_dataset
from skipseg.errors import SkipsegError


def test_ids_and_default_voc_class_names(tiny_voc):
    dataset = SegmentationDataset(tiny_voc.root, "train")
    assert dataset.ids == tiny_voc.splits["train"]
    assert len(dataset) == 3
    assert dataset.class_names == list(VOC_CLASSES)
    assert dataset.num_classes == 21
    assert dataset.split == "train"
    assert dataset.image_path(1) == tiny_voc.image(tiny_voc.splits["train"][1])
    assert len(SegmentationDataset(tiny_voc.root, "trainval")) == 5


def test_class_names_from_classes_txt(make_tiny_voc):
    data = make_tiny_voc(classes=["background", "square", "disc", "ring"])
    dataset = SegmentationDataset(data.root, "val")
    assert dataset.class_names == ["background", "square", "disc", "ring"]
    assert dataset.num_classes == 4
    _, mask = dataset.load(0)
    assert set(np.unique(mask)) <= {0, 1, 2, 3, 255}


def test_bad_classes_txt_is_reported(tiny_voc):
    (tiny_voc.root / "classes.txt").write_text("background\n\ncat\n")
    with pytest.raises(DataError, match=r"classes.txt: line 2 is blank"):
        SegmentationDataset(tiny_voc.root, "train")


@pytest.mark.parametrize("relative, given", [("VOCdevkit/VOC2012", "."), ("VOCdevkit/VOC2012", "VOCdevkit")])
def test_voc_as_distributed(make_tiny_voc, tmp_path, relative, given):
    data = make_tiny_voc(relative)
    dataset = SegmentationDataset(tmp_path / given, "val")
    assert dataset.root == data.root
    assert dataset.ids == data.splits["val"]


def test_load_is_raw_rgb_and_index_mask(tiny_voc):
    dataset = SegmentationDataset(tiny_voc.root, "trainval")
    for index, image_id in enumerate(dataset.ids):
        image, mask = dataset.load(index)
        assert image.mode == "RGB" and image.size == (61, 45)
        assert mask.dtype == np.uint8 and mask.shape == (45, 61)
        np.testing.assert_array_equal(mask, tiny_voc.labels[image_id])
        # JPEG: close to what was written, not equal
        assert np.abs(np.asarray(image, np.int16) - tiny_voc.images[image_id]).mean() < 8


def test_masks_are_indices_not_colours(tiny_voc):
    """Change the palette colours (and write one mask as plain 'L'): the labels must not change."""
    image_id = tiny_voc.splits["train"][0]
    label = tiny_voc.labels[image_id]
    mask = Image.fromarray(label, mode="P")
    mask.putpalette(np.random.default_rng(1).integers(0, 256, 768).astype(np.uint8).tolist())
    mask.save(tiny_voc.mask(image_id))
    other = tiny_voc.splits["train"][1]
    Image.fromarray(tiny_voc.labels[other], mode="L").save(tiny_voc.mask(other))

    dataset = SegmentationDataset(tiny_voc.root, "train")
    np.testing.assert_array_equal(dataset.load(0)[1], label)
    np.testing.assert_array_equal(dataset.load(1)[1], tiny_voc.labels[other])


def test_load_objects(tiny_voc):
    dataset = SegmentationDataset(tiny_voc.root, "val")
    assert dataset.has_objects
    for index, image_id in enumerate(dataset.ids):
        objects = dataset.load_objects(index)
        assert objects.dtype == np.uint8
        np.testing.assert_array_equal(objects, tiny_voc.objects[image_id])
        assert set(np.unique(objects)) <= {0, 1, 2, 255}


def test_no_object_masks(make_tiny_voc):
    data = make_tiny_voc(objects=False)
    dataset = SegmentationDataset(data.root, "train")
    assert not dataset.has_objects
    with pytest.raises(SkipsegError, match="no object masks"):
        dataset.load_objects(0)


def test_getitem_without_transforms(tiny_voc):
    dataset = SegmentationDataset(tiny_voc.root, "train")
    image, mask = dataset[2]
    assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
    assert image.dtype == torch.uint8 and image.shape == (3, 45, 61)
    assert mask.dtype == torch.int64 and mask.shape == (45, 61)
    np.testing.assert_array_equal(mask.numpy(), tiny_voc.labels[dataset.ids[2]])
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), np.asarray(dataset.load(2)[0]))


def test_getitem_with_transforms_and_dataloader(tiny_voc):
    dataset = SegmentationDataset(tiny_voc.root, "val", transforms=eval_transforms())
    image, mask = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (3, 45, 61)
    assert mask.dtype == torch.int64 and mask.shape == (45, 61)
    assert abs(float(image.mean())) < 3

    train = SegmentationDataset(tiny_voc.root, "train", transforms=train_transforms(32))
    images, masks = next(iter(DataLoader(train, batch_size=3)))
    assert images.shape == (3, 3, 32, 32) and masks.shape == (3, 32, 32)
    assert masks.dtype == torch.int64
    pickle.loads(pickle.dumps(train))  # DataLoader workers need it picklable


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16"])
def test_image_modes_converted_to_rgb(tiny_voc, mode):
    image_id = tiny_voc.splits["train"][0]
    rgb = tiny_voc.images[image_id]
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    path = tiny_voc.image(image_id)
    path.unlink()
    if mode == "CMYK":
        Image.fromarray(rgb).convert("CMYK").save(path, quality=95)  # CMYK JPEG
    elif mode == "I;16":
        Image.fromarray(gray.astype(np.uint16) * 257).save(path.with_suffix(".png"))
    else:
        source = Image.fromarray(rgb)
        if mode == "RGBA":
            source.putalpha(Image.new("L", source.size, 7))
        converted = source if mode == "RGBA" else source.convert(mode)
        converted.save(path.with_suffix(".png"))
        if mode == "P":
            rgb = np.asarray(converted.convert("RGB"))
    dataset = SegmentationDataset(tiny_voc.root, "train")
    image, mask = dataset.load(0)
    assert image.mode == "RGB" and image.size == (61, 45)
    array = np.asarray(image, np.int16)
    if mode in ("L", "LA", "I;16"):
        np.testing.assert_array_equal(array, np.repeat(gray[..., None], 3, axis=2))
    elif mode in ("RGBA", "P"):
        np.testing.assert_array_equal(array, rgb)
    else:
        assert np.abs(array - rgb).mean() < 6
    assert dataset[0][0].shape == (3, 45, 61)


def test_seg11valid_is_not_invented(tiny_voc):
    with pytest.raises(SkipsegError, match=r"seg11valid\.txt: split file not found.*736.*FCN"):
        SegmentationDataset(tiny_voc.root, "seg11valid")
    tiny_voc.split_file("seg11valid").write_text("2007_000033\n")
    assert SegmentationDataset(tiny_voc.root, "seg11valid").ids == ["2007_000033"]


def test_unknown_and_empty_splits(tiny_voc):
    expected = r"test\.txt: split file not found \(available splits: train, trainval, val\)"
    with pytest.raises(DataError, match=expected):
        SegmentationDataset(tiny_voc.root, "test")
    tiny_voc.split_file("val").write_text("\n  \n")
    with pytest.raises(DataError, match="split file is empty"):
        SegmentationDataset(tiny_voc.root, "val")


def test_not_a_dataset(tmp_path):
    with pytest.raises(SkipsegError, match="not a dataset in VOC layout"):
        SegmentationDataset(tmp_path, "train")
    with pytest.raises(SkipsegError, match="not found"):
        open_dataset(tmp_path / "nowhere", "train")


def test_open_dataset_picks_voc_layout(tiny_voc):
    dataset = open_dataset(tiny_voc.root, "val", transforms=eval_transforms())
    assert isinstance(dataset, SegmentationDataset)
    assert dataset[0][0].dtype == torch.float32
    with pytest.raises(SkipsegError, match="sbd"):
        open_dataset(tiny_voc.root, "train_aug")


def test_broken_sample_raises_while_others_load(tiny_voc):
    dataset = SegmentationDataset(tiny_voc.root, "train")
    tiny_voc.mask(dataset.ids[1]).unlink()
    dataset.load(0)
    with pytest.raises(DataError, match=r"SegmentationClass/2007_000039\.png: mask not found"):
        dataset[1]
