"""Shared fixtures: a tiny VOC-layout dataset written by hand with PIL (independent of the generator)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest
from PIL import Image

from skipseg.data.palette import save_label_png, voc_colormap

TINY_SPLITS = {"train": ["2007_000032", "2007_000039", "2008_000002"], "val": ["2007_000033", "2009_000010"]}


@dataclass
class TinyVOC:
    """What was written: the root and, per id, the RGB array, class labels and object labels."""

    root: Path
    splits: dict[str, list[str]]
    images: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    objects: dict[str, np.ndarray] = field(default_factory=dict)

    def image(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def mask(self, image_id: str) -> Path:
        return self.root / "SegmentationClass" / f"{image_id}.png"

    def object_mask(self, image_id: str) -> Path:
        return self.root / "SegmentationObject" / f"{image_id}.png"

    def split_file(self, split: str) -> Path:
        return self.root / "ImageSets" / "Segmentation" / f"{split}.txt"


def tiny_sample(rng: np.random.Generator, height: int, width: int, num_classes: int):
    """Background plus two rectangles (a class each) with a 1-px 255 band on their borders, as in VOC."""
    label = np.zeros((height, width), np.uint8)
    objects = np.zeros((height, width), np.uint8)
    classes = rng.choice(np.arange(1, num_classes), size=2, replace=num_classes < 3)
    for number, cls in enumerate(classes, start=1):
        h, w = rng.integers(height // 4, height // 2 + 1), rng.integers(width // 4, width // 2 + 1)
        top, left = rng.integers(0, height - h), rng.integers(0, width - w)
        for target, value in ((label, cls), (objects, number)):
            target[top : top + h, left : left + w] = 255
            target[top + 1 : top + h - 1, left + 1 : left + w - 1] = value
    colours = voc_colormap()[label].astype(np.int16)
    image = np.clip(colours + rng.integers(-8, 9, colours.shape), 0, 255).astype(np.uint8)
    return image, label, objects


def write_tiny_voc(
    root: Path,
    splits: dict[str, Sequence[str]] | None = None,
    size: tuple[int, int] = (45, 61),
    classes: Sequence[str] | None = None,
    objects: bool = True,
    seed: int = 0,
) -> TinyVOC:
    """A VOC-layout folder: JPEG images, palette PNG class/object masks, split lists (+ trainval)."""
    splits = {name: list(ids) for name, ids in (splits or TINY_SPLITS).items()}
    if "train" in splits and "val" in splits and "trainval" not in splits:
        splits["trainval"] = sorted(set(splits["train"]) | set(splits["val"]))
    num_classes = len(classes) if classes else 21
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    if objects:
        (root / "SegmentationObject").mkdir(exist_ok=True)
    if classes:
        (root / "classes.txt").write_text("".join(f"{name}\n" for name in classes))
    data = TinyVOC(root, splits)
    rng = np.random.default_rng(seed)
    for image_id in sorted({i for ids in splits.values() for i in ids}):
        image, label, object_map = tiny_sample(rng, *size, num_classes)
        Image.fromarray(image).save(data.image(image_id), quality=95)
        save_label_png(data.mask(image_id), label)
        if objects:
            save_label_png(data.object_mask(image_id), object_map)
        data.images[image_id], data.labels[image_id], data.objects[image_id] = image, label, object_map
    for name, ids in splits.items():
        data.split_file(name).write_text("".join(f"{i}\n" for i in ids))
    return data


@pytest.fixture
def make_tiny_voc(tmp_path: Path) -> Callable[..., TinyVOC]:
    """Factory: `make_tiny_voc("sub/folder", splits=..., size=(H, W), classes=[...])` under tmp_path."""

    def make(relative: str = "voc", **kwargs) -> TinyVOC:
        return write_tiny_voc(tmp_path / relative, **kwargs)

    return make


@pytest.fixture
def tiny_voc(make_tiny_voc) -> TinyVOC:
    """A clean 5-image VOC-layout dataset (train 3, val 2, trainval), 45×61 images, VOC classes."""
    return make_tiny_voc()


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """A small generated dataset shared by the engine tests (16 train, 4 val, 48 px)."""
    from skipseg.data.shapes import generate_shapes

    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, train=16, val=4, size=48, seed=0)
    return root


_HOLD = ("import sys, time\nfrom skipseg.core.lock import FolderLock\nlock = FolderLock(sys.argv[1]).acquire()\n"
         "print('held', flush=True)\ntime.sleep(300)\n")


def hold(folder: Path):
    """Another process holding `folder`'s lock, as a training run does, until it is killed."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def tiny_train_config(root: Path, *overrides: str):
    """A CPU-tiny FCN config on `root`: width 1/16, 32 px crops, no validation until the end."""
    from skipseg.config import load_config

    base = [
        f"data.root={root}", "data.crop_size=32", "data.workers=0", "model.name=fcn8s",
        "model.width=0.0625", "train.batch_size=2", "train.iterations=6", "train.lr=0.05",
        "train.log_every=1", "train.val_every=100", "train.checkpoint_every=100", "train.precision=fp32",
        "train.channels_last=false",
    ]
    return load_config(None, base + list(overrides))


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache; any download attempt fails as it would offline. Returns the
    checkpoints folder where torchvision looks for cached weights."""
    import urllib.error

    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch" / "hub" / "checkpoints"
