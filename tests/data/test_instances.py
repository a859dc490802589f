"""DeconvNet's two-stage training data: instance crops (stage 1), proposal crops (stage 2), the
stage-1 labelling of void borders, padding outside the image, and class balance by repetition."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from skipseg.data.instances import (
    MEAN_PIXEL, InstanceCropDataset, ProposalCropDataset, balanced, balanced_indices, box_iou, centre_object_label,
    extend_box, object_boxes, repeat_factors,
)
from skipseg.data.shapes import generate_shapes
from skipseg.data.augmentation import train_transforms
from skipseg.data.datasets import open_dataset
from skipseg.errors import SkipsegError
from skipseg.inference.proposals import proposals


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, train=8, val=4, size=64, seed=0)
    return open_dataset(root, "train")


class OneImage:
    """A hand-made base dataset: a 40x50 image, object 1 (class 3) in the top-left corner, object 2
    (class 5) in the middle, each with a 1-px void border."""

    class_names = [f"c{i}" for i in range(6)]
    ids = ["one"]
    has_objects = True
    root, split = "mem", "train"

    def __init__(self) -> None:
        self.objects = np.zeros((40, 50), np.uint8)
        self.objects[0:11, 0:11], self.objects[0:10, 0:10] = 255, 1
        self.objects[19:31, 19:33], self.objects[20:30, 20:32] = 255, 2
        self.classes = np.array([0, 3, 5] + [0] * 252 + [255], np.uint8)[self.objects]
        self.pixels = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)

    def __len__(self) -> int:
        return 1

    def load(self, index: int):
        return Image.fromarray(self.pixels), self.classes.copy()

    def load_objects(self, index: int) -> np.ndarray:
        return self.objects.copy()

    def image_path(self, index: int):
        return "one.png"


def test_object_boxes_and_extension() -> None:
    base = OneImage()
    assert object_boxes(base.classes, base.objects) == [(1, 3, (0, 0, 10, 10)), (2, 5, (20, 20, 32, 30))]
    assert extend_box((20, 20, 32, 30), 1.2) == (19, 19, 33, 31)  # 12x10 -> 14x12, same centre
    assert extend_box((0, 0, 10, 10), 1.2) == (-1, -1, 11, 11)
    assert extend_box((0, 0, 10, 10), 1.2, size=(40, 50)) == (0, 0, 11, 11)


def test_stage1_centre_object_only_padding_outside() -> None:
    data = InstanceCropDataset(OneImage(), extend=1.2)
    assert len(data) == 2 and data.sample_classes == [3, 5] and data.num_classes == 6
    assert data.ids == ["one@-1,-1,11,11", "one@19,19,33,31"]
    image, mask = data.load(0)
    image = np.asarray(image)
    assert image.shape == (12, 12, 3) and mask.shape == (12, 12)
    assert (image[0] == MEAN_PIXEL).all() and (image[:, 0] == MEAN_PIXEL).all()  # padded with the mean
    assert (mask[0] == 255).all() and (mask[:, 0] == 255).all()  # ... and ignored
    assert np.array_equal(image[1:, 1:], OneImage().pixels[:11, :11])
    assert (mask[1:11, 1:11] == 3).all() and set(np.unique(mask)) == {3, 255}
    _, mask = data.load(1)
    assert (mask[1:11, 1:13] == 5).all() and set(np.unique(mask)) == {5, 255} and (mask[0] == 255).all()
    clipped = InstanceCropDataset(OneImage(), pad_outside=False)
    assert np.asarray(clipped.load(0)[0]).shape == (11, 11, 3)


def test_void_borders_of_other_objects_become_background() -> None:
    objects = np.zeros((20, 30), np.uint8)
    objects[2:9, 2:9], objects[3:8, 3:8] = 255, 1  # object 1 with its void band
    objects[2:9, 20:28], objects[3:8, 21:27] = 255, 2  # object 2, apart
    objects[10:19, 2:12], objects[11:18, 3:11] = 255, 3  # object 3 ...
    objects[9:12, 4:7] = 255  # ... whose band touches object 1's band
    classes = np.array([0, 7, 8, 9] + [0] * 251 + [255], np.uint8)[objects]
    label = centre_object_label(classes, objects, instance=1, label=7)
    assert (label[objects == 1] == 7).all()
    assert (label[2:9, 2:9][objects[2:9, 2:9] == 255] == 255).all()  # the centre's own band: void
    assert (label[:, 15:] == 0).all()  # object 2 and its band: background
    assert (label[objects == 3] == 0).all()
    assert (label[10:19, 2:12][objects[10:19, 2:12] == 255] == 255).all()  # merged band: kept void
    alone = centre_object_label(classes, objects, instance=2, label=8)
    assert (alone[:, :15] == 0).all() and (alone[2:9, 20:28][objects[2:9, 20:28] == 255] == 255).all()


def test_stage1_on_generated_dataset_with_paper_augmentation(shapes) -> None:
    total = sum(len(object_boxes(shapes.load(i)[1], shapes.load_objects(i))) for i in range(len(shapes)))
    data = InstanceCropDataset(shapes, transforms=train_transforms(224, scale_range=None, flip=True, resize=250),
                               workers=2)
    assert len(data) == total > len(shapes)
    assert data.image_path(0) == shapes.image_path(data.samples[0].index)
    for i in range(len(data)):
        sample = data.samples[i]
        raw_image, raw_mask = data.load(i)
        x0, y0, x1, y1 = sample.window
        assert raw_image.size == (x1 - x0, y1 - y0) and raw_mask.shape == (y1 - y0, x1 - x0)
        assert set(np.unique(raw_mask)) <= {0, sample.label, 255} and (raw_mask == sample.label).any()
        ys, xs = np.nonzero(raw_mask == sample.label)  # the object is in the middle of its crop
        assert abs((xs.min() + xs.max() + 1) / 2 - (x1 - x0) / 2) <= 1.5
        assert abs((ys.min() + ys.max() + 1) / 2 - (y1 - y0) / 2) <= 1.5
    torch.manual_seed(0)
    image, mask = data[0]
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32
    assert mask.shape == (224, 224) and set(mask.unique().tolist()) <= {0, data.samples[0].label, 255}


def test_stage2_selects_by_iou_and_keeps_all_labels(shapes, tmp_path) -> None:
    base = OneImage()
    fake = lambda path: np.array([[0, 0, 50, 40], [20, 20, 32, 30], [22, 21, 34, 31], [0, 0, 12, 12],
                                  [40, 30, 50, 40], [18, 18, 30, 28]])
    data = ProposalCropDataset(base, fake, min_iou=0.5)
    iou = box_iou(fake(None), [(0, 0, 10, 10), (20, 20, 32, 30)]).max(1)
    assert [s.window for s in data.samples] == [extend_box(b, 1.2) for b in fake(None)[iou >= 0.5]]
    assert data.sample_classes == [5, 5, 3, 5]
    assert len(ProposalCropDataset(base, fake, min_iou=0.9)) == 1
    assert len(ProposalCropDataset(base, fake, max_per_image=2)) == 2
    _, mask = data.load(0)  # all labels kept: the crop of the class mask, 255 outside the image
    x0, y0, x1, y1 = data.samples[0].window
    assert np.array_equal(mask, base.classes[y0:y1, x0:x1])
    with pytest.raises(SkipsegError, match="min_iou"):
        ProposalCropDataset(base, fake, min_iou=0)

    real = ProposalCropDataset(shapes, partial(proposals, k=30, cache_dir=tmp_path), min_iou=0.5,
                               transforms=train_transforms(224, scale_range=None, flip=True, resize=250))
    assert len(real) > 0 and set(real.sample_classes) <= set(range(1, 21))
    image, mask = real[len(real) - 1]
    assert image.shape == (3, 224, 224) and mask.shape == (224, 224)
    assert len(list(tmp_path.glob("*.npy"))) == len(shapes)  # one cached proposal file per image


def test_stage2_proposals_in_processes_give_the_same_samples(shapes, tmp_path) -> None:
    search = partial(proposals, k=30)  # no cache: both datasets run selective search themselves
    serial = ProposalCropDataset(shapes, search, min_iou=0.5)
    spawned = ProposalCropDataset(shapes, search, min_iou=0.5, search_workers=2)
    assert len(serial) > 0 and spawned.samples == serial.samples


def test_class_balance_by_repetition() -> None:
    assert repeat_factors([1, 1, 1, 2, 3, 3]).tolist() == [1, 1, 1, 3, 2, 2]
    assert repeat_factors([]).tolist() == []

    class Fake:
        sample_classes = [4, 4, 4, 4, 7, 9, 9]

    indices = balanced_indices(Fake())
    assert indices == [0, 1, 2, 3, 4, 4, 4, 4, 5, 5, 6, 6]
    counts = np.bincount(np.array(Fake.sample_classes)[indices])
    assert counts[4] == counts[7] == counts[9] == 4
    shuffled = balanced_indices(Fake(), seed=3)
    assert shuffled == balanced_indices(Fake(), seed=3) and sorted(shuffled) == indices and shuffled != indices
    with pytest.raises(SkipsegError, match="sample_classes"):
        balanced_indices([1, 2, 3])


def test_balanced_dataset_keeps_the_interface(shapes) -> None:
    data = InstanceCropDataset(shapes)
    even = balanced(data, seed=0)
    counts = np.bincount(even.sample_classes)
    assert counts[counts > 0].min() >= counts.max() / 2  # each class at least half as frequent as the top one
    assert len(even) == sum(repeat_factors(data.sample_classes)) and even.num_classes == 21
    i = even.indices[0]
    assert even.ids[0] == data.ids[i] and even.image_path(0) == data.image_path(i)
    assert np.array_equal(np.asarray(even.load(0)[0]), np.asarray(data.load(i)[0]))
    assert torch.equal(even[0][1], data[i][1])


def test_needs_object_masks(shapes) -> None:
    base = OneImage()
    base.has_objects = False
    with pytest.raises(SkipsegError, match="object masks"):
        InstanceCropDataset(base)


def test_stage2_proposal_count_and_source_resolution_are_config_keys(shapes, tmp_path, monkeypatch) -> None:
    """data.proposals / data.proposal_side / data.min_iou reach the proposal search of stage 2
    (null side: the full image), as the VOC config sets them to the paper's 2,000 per full image."""
    from skipseg.config import load_config
    from skipseg.engine import trainer
    from skipseg.inference import proposals as proposals_module

    asked = []

    def search(path, k, cache_dir, max_side, **kwargs):
        asked.append((k, max_side))
        return np.array([[0, 0, 64, 64]])

    monkeypatch.setattr(proposals_module, "proposals", search)
    monkeypatch.setattr(trainer.os, "cpu_count", lambda: 1)  # the stand-in records its calls in this process
    for side, expected in (("null", None), ("48", 48)):
        config = load_config(None, [f"data.root={shapes.root}", "data.sampling=proposals", "data.crop_size=32",
                                    "data.proposals=2000", f"data.proposal_side={side}", "data.min_iou=0.3",
                                    "data.workers=0"])
        asked.clear()
        crops = trainer.build_train_set(config, tmp_path / side)
        assert set(asked) == {(2000, expected)} and len(asked) == len(shapes)
        assert crops.min_iou == 0.3
    from skipseg.config import PACKAGED_CONFIGS
    from skipseg.engine.stages import load_staged_config, stage_configs

    stages = stage_configs(load_staged_config(PACKAGED_CONFIGS / "deconvnet_voc.yaml"), None)
    voc = dict(stages)["stage2"].data
    assert (voc.sampling, voc.proposals, voc.proposal_side, voc.min_iou) == ("proposals", 2000, None, 0.5)


def test_decoded_cache_keeps_crops_within_its_budget(tmp_path) -> None:
    """With `cache_bytes` (the trainer's data.cache_mb) each image and each crop is decoded once per
    process: the same samples as without the cache, and still there once the files are gone."""
    generate_shapes(tmp_path, train=6, val=2, size=45, seed=3)
    uncached = InstanceCropDataset(open_dataset(tmp_path, "train"))
    base = open_dataset(tmp_path, "train")
    base.cache_bytes = 1 << 20
    cached = InstanceCropDataset(base)
    first = [cached.load(i) for i in range(len(cached))]
    for i, (image, mask) in enumerate(first):
        want_image, want_mask = uncached.load(i)
        assert np.array_equal(np.asarray(image), np.asarray(want_image)) and np.array_equal(mask, want_mask)
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationObject"):
        for path in (tmp_path / folder).iterdir():
            path.unlink()
    again = [cached.load(i) for i in range(len(cached))]
    assert all(a[0] is b[0] and a[1] is b[1] for a, b in zip(first, again))
    with pytest.raises(SkipsegError):
        uncached.load(0)  # no budget: it reads the (deleted) files again
    base_bytes = sum(image.width * image.height * 4 for image, _ in (base.load(i) for i in range(len(base))))
    assert base.__dict__["_decoded"].used == base_bytes <= base.cache_bytes


def test_transformed_items_are_the_same_with_the_tensor_cache(tmp_path) -> None:
    """The cache also keeps each sample as uint8 tensors for the transforms: the same training items
    (draw for draw) as decoding every time, the transforms get uint8 class ids, and a cached sample
    is not changed by being augmented; its bytes count against the same budget."""
    generate_shapes(tmp_path, train=5, val=2, size=45, seed=4)
    augment = train_transforms(32, scale_range=(0.5, 1.5), flip=True)
    seen = []

    def spy(image, mask):
        seen.append((image.dtype, mask.dtype))
        return augment(image, mask)

    plain = open_dataset(tmp_path, "train", transforms=spy)
    cached = open_dataset(tmp_path, "train", transforms=spy)
    cached.cache_bytes = 1 << 20
    crops = InstanceCropDataset(cached, transforms=spy)
    for dataset, reference in ((cached, plain), (crops, InstanceCropDataset(plain, transforms=spy))):
        for repeat in range(2):
            for i in range(len(dataset)):
                torch.manual_seed(10 * i + repeat)
                got = dataset[i]
                torch.manual_seed(10 * i + repeat)
                want = reference[i]
                assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]) and got[1].dtype == torch.int64
    assert set(seen) == {(torch.uint8, torch.uint8)}
    memo = cached.__dict__["_decoded"]
    assert len(memo.tensor_items) == len(cached) and memo.used <= cached.cache_bytes
    image, mask = cached.load(0)
    kept_image, kept_mask = memo.tensor_items[0]
    assert torch.equal(kept_image, torch.from_numpy(np.array(image)).permute(2, 0, 1))
    assert torch.equal(kept_mask, torch.from_numpy(mask))
