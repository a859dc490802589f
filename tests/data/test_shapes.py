"""The generated shapes dataset: layout, label consistency, determinism, difficulty, errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skipseg.data import shapes
from skipseg.data.shapes import writer
from skipseg.data.palette import IGNORE_INDEX, read_label_png
from skipseg.data.shapes import format_summary, generate_shapes, render_shapes_image
from skipseg.data.shapes.objects import OBJECT_SCENE, STREAMS, as_stored, render_object
from skipseg.data.shapes.render import render_scene
from skipseg.errors import SkipsegError

SIZE = 64


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("shapes") / "ds"
    return root, generate_shapes(root, train=6, val=4, size=SIZE, seed=1)


@pytest.fixture(scope="module")
def samples() -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """In-memory renders (same code path as the files) for the statistical checks."""
    return [render_shapes_image(3, i, SIZE) for i in range(100)]


def _instances(obj: np.ndarray) -> list[int]:
    return [int(k) for k in np.unique(obj) if 0 < k < IGNORE_INDEX]


def _lists(root: Path) -> dict[str, list[str]]:
    folder = root / "ImageSets" / "Segmentation"
    return {s: (folder / f"{s}.txt").read_text().split() for s in ("train", "val", "trainval")}


def test_layout_and_counts(dataset):
    root, summary = dataset
    lists = _lists(root)
    assert len(lists["train"]) == 6 and len(lists["val"]) == 4
    assert lists["trainval"] == lists["train"] + lists["val"]
    assert not set(lists["train"]) & set(lists["val"])
    assert all(i.startswith("shapes_") for i in lists["trainval"])
    names = (root / "classes.txt").read_text().split()
    assert names == ["background", *shapes.SHAPE_NAMES] and names[1:4] == ["plus", "ring", "triangle"]
    for image_id in lists["trainval"]:
        with Image.open(root / "JPEGImages" / f"{image_id}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (SIZE, SIZE)
        for sub in ("SegmentationClass", "SegmentationObject"):
            with Image.open(root / sub / f"{image_id}.png") as im:
                assert im.format == "PNG" and im.mode == "P" and im.size == (SIZE, SIZE)
    assert len(list((root / "JPEGImages").iterdir())) == 10

    assert summary["root"] == str(root)
    assert (summary["num_train"], summary["num_val"], summary["size"], summary["seed"]) == (6, 4, SIZE, 1)
    assert summary["num_classes"] == 21 and summary["images_per_s"] > 0 and summary["seconds"] > 0
    assert 1 <= summary["objects_per_image"] <= shapes.MAX_OBJECTS
    frac = summary["class_pixel_fraction"]
    assert len(frac) == 21 and abs(sum(frac) - 1) < 1e-9 and 0 < frac[0] < 1
    text = format_summary(summary)
    assert str(root) in text and "images/s" in text and len(text.splitlines()) >= 3


def test_masks_are_consistent(dataset):
    root, _ = dataset
    for image_id in _lists(root)["trainval"]:
        cls = read_label_png(root / "SegmentationClass" / f"{image_id}.png")
        obj = read_label_png(root / "SegmentationObject" / f"{image_id}.png")
        assert set(np.unique(cls)) <= set(range(21)) | {IGNORE_INDEX}
        np.testing.assert_array_equal(cls == IGNORE_INDEX, obj == IGNORE_INDEX)
        np.testing.assert_array_equal(cls == 0, obj == 0)
        ids = _instances(obj)
        # Consecutive ids: no instance was hidden entirely or erased by the void band.
        assert ids == list(range(1, len(ids) + 1)) and len(ids) >= 1
        for k in ids:
            classes = np.unique(cls[obj == k])
            assert len(classes) == 1 and 1 <= classes[0] <= 20


def test_void_band_on_borders(samples):
    for _, cls, obj, _ in samples:
        assert (obj == IGNORE_INDEX).any()
        ids = _instances(obj)
        assert ids == list(range(1, len(ids) + 1))
        # The band separates every instance from the background and from other instances: no two
        # non-void pixels with different ids are neighbours.
        for a, b in ((obj[1:], obj[:-1]), (obj[:, 1:], obj[:, :-1])):
            both = (a != IGNORE_INDEX) & (b != IGNORE_INDEX)
            assert not np.any(both & (a != b))
    # ...and it is thin: a small share of the pixels.
    void_share = np.mean([np.mean(o == IGNORE_INDEX) for _, _, o, _ in samples])
    assert 0.01 < void_share < 0.2  # about 0.12 at 64 px (a 2 px band), half that at 128 px


def _no_touching(obj: np.ndarray, band: np.ndarray) -> bool:
    o = np.where(band, IGNORE_INDEX, obj)
    for a, b in ((o[1:], o[:-1]), (o[:, 1:], o[:, :-1])):
        if np.any((a != IGNORE_INDEX) & (b != IGNORE_INDEX) & (a != b)):
            return False
    return True


def test_void_band_keeps_tiny_objects():
    obj = np.zeros((40, 40), np.uint8)
    obj[5:25, 5:25] = 1  # an ordinary object: a 2 px band astride its outline
    band = shapes.void_band(obj, 1)
    assert band[4:26, 4:26].sum() - band[6:24, 6:24].sum() == 22 * 22 - 18 * 18
    assert not band[6:24, 6:24].any() and band.sum() == 22 * 22 - 18 * 18

    obj[10:12, 10:12] = 2  # a 2x2 object on top of it: the band would swallow it whole
    obj[30:32, 30:32] = 3  # two 2x2 objects touching on the background
    obj[30:32, 32:34] = 4
    band = shapes.void_band(obj, 1)
    assert not band[obj == 2].any()  # kept whole, the band is outside it
    assert not band[obj == 4].any()  # the later one keeps the contact...
    assert band[30:32, 31].all() and not band[30:32, 30].any()  # ...the earlier one loses it only
    assert band[9:13, 9:13].sum() == 16 - 4  # the ring around it is void
    assert _no_touching(obj, band)
    obj[30:32, 30:32] = 0
    obj[31, 31] = 3  # a one-pixel object next to the later one
    band = shapes.void_band(obj, 1)
    assert not band[obj == 4].any() and band[31, 31]


def test_band_scales_with_size():
    assert shapes.band_radius(64) == 1 and shapes.band_radius(128) == 1
    assert shapes.band_radius(500) == 3


def _read_all(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_and_independent_of_workers(tmp_path, dataset):
    a = generate_shapes(tmp_path / "a", train=6, val=4, size=SIZE, seed=1, workers=0)
    generate_shapes(tmp_path / "b", train=6, val=4, size=SIZE, seed=1, workers=2)
    files_a = _read_all(tmp_path / "a")
    assert len(files_a) == 3 * 10 + 3 + 2  # images + masks, three lists, classes.txt, shapes.json
    assert files_a == _read_all(tmp_path / "b") == _read_all(dataset[0])
    assert a["class_pixel_fraction"] == dataset[1]["class_pixel_fraction"]

    generate_shapes(tmp_path / "c", train=6, val=4, size=SIZE, seed=2)
    files_c = _read_all(tmp_path / "c")
    differing = [k for k in files_a if k.startswith("JPEGImages") and files_a[k] != files_c[k]]
    assert len(differing) == 10


def test_content_depends_only_on_seed_and_id(tmp_path, dataset):
    # Changing the split sizes keeps each id's files: shapes_000007 is val above, train here.
    generate_shapes(tmp_path / "d", train=8, val=0, size=SIZE, seed=1)
    name = "JPEGImages/shapes_000007.jpg"
    assert (tmp_path / "d" / name).read_bytes() == (dataset[0] / name).read_bytes()


def test_objects_at_many_scales(samples):
    extents = []
    for _, _, obj, _ in samples:
        for k in _instances(obj):
            ys, xs = np.nonzero(obj == k)
            extents.append(max(np.ptp(ys), np.ptp(xs)) + 1)
    extents = np.asarray(extents) / SIZE
    assert extents.min() <= 0.08  # tiny (a few pixels at 64 px)
    assert extents.max() >= 0.75  # image-filling
    assert np.mean(extents < 0.15) > 0.1 and np.mean(extents > 0.5) > 0.05
    counts = [len(_instances(obj)) for _, _, obj, _ in samples]
    assert min(counts) == 1 and max(counts) >= 5  # several objects per image


def test_many_classes_and_occlusion(samples):
    present = {int(c) for _, cls, _, _ in samples for c in np.unique(cls) if 0 < c < IGNORE_INDEX}
    assert present == set(range(1, 21))
    # Objects overlap: in many images two instances touch (across the void band between them).
    touching = 0
    for _, _, obj, _ in samples:
        ids = _instances(obj)
        grown = {k: _grow(obj == k, 2 * shapes.band_radius(SIZE) + 1) for k in ids}
        touching += any((grown[a] & grown[b]).any() for a in ids for b in ids if a < b)
    assert touching >= 10


def _grow(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(r):
        out[1:] |= out[:-1].copy()
        out[:-1] |= out[1:].copy()
        out[:, 1:] |= out[:, :-1].copy()
        out[:, :-1] |= out[:, 1:].copy()
    return out


def _centroid_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out nearest-class-centroid accuracy."""
    correct = 0
    for i in range(len(labels)):
        keep = np.arange(len(labels)) != i
        classes = np.unique(labels[keep])
        centroids = np.stack([features[keep][labels[keep] == c].mean(0) for c in classes])
        correct += classes[np.argmin(((centroids - features[i]) ** 2).sum(1))] == labels[i]
    return correct / len(labels)


def test_colour_does_not_identify_the_class(samples):
    feats, labels = [], []
    for rgb, cls, obj, _ in samples:
        for k in _instances(obj):
            inside = obj == k
            feats.append(rgb[inside].mean(0))
            labels.append(int(cls[inside][0]))
    feats, labels = np.asarray(feats), np.asarray(labels)
    assert len(labels) > 200
    chance = np.bincount(labels).max() / len(labels)
    # Mean object colour predicts the class barely better than chance (deterministic data: the
    # value is fixed, measured about 0.08 with chance about 0.065)...
    assert _centroid_accuracy(feats, labels) < max(0.2, 2 * chance)
    # ...while the same check flags a generator whose colours do carry the class.
    rng = np.random.default_rng(0)
    palette = rng.uniform(0, 255, (21, 3))
    coloured = palette[labels] + rng.normal(0, 25, feats.shape)
    assert _centroid_accuracy(coloured, labels) > 0.5


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"size": 16}, "size"),
        ({"size": 64.0}, "size"),
        ({"size": 10**5}, "size"),
        ({"train": -1}, "train"),
        ({"val": -3}, "val"),
        ({"seed": -1}, "seed"),
        ({"workers": -1}, "workers"),
        ({"train": True}, "train"),
        ({"train": 0, "val": 0}, "nothing to generate"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, word):
    with pytest.raises(SkipsegError, match=word):
        generate_shapes(tmp_path / "x", **{"train": 2, "val": 1, "size": SIZE, **kwargs})
    assert not (tmp_path / "x").exists()


def test_refuses_to_overwrite_a_foreign_dataset(tmp_path):
    lists = tmp_path / "voc" / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000032\n")
    with pytest.raises(SkipsegError, match="not generated by skipseg"):
        generate_shapes(tmp_path / "voc", train=2, val=1, size=SIZE)
    assert (lists / "train.txt").read_text() == "2007_000032\n"


def test_interrupted_run_leaves_no_lists(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    generate_shapes(root, train=3, val=1, size=SIZE)  # a complete earlier run, then a failing one
    real = writer.render_scene

    def failing(seed, index, size, spec):
        if index == 2:
            raise RuntimeError("disk full")
        return real(seed, index, size, spec)

    monkeypatch.setattr(writer, "render_scene", failing)
    for workers in (0, 2):
        with pytest.raises(RuntimeError, match="disk full"):
            generate_shapes(root, train=3, val=1, size=SIZE, workers=workers)
        assert not any((root / "ImageSets" / "Segmentation").glob("*.txt"))
    monkeypatch.setattr(writer, "render_scene", real)
    generate_shapes(root, train=3, val=1, size=SIZE)
    assert _lists(root)["trainval"] == [f"shapes_{i:06d}" for i in range(4)]


def test_shape_families_are_distinct():
    assert len(shapes.SHAPE_NAMES) == 20 == len(set(shapes.SHAPE_NAMES))


def test_scene_spec_narrows_classes_scales_and_objects(tmp_path):
    spec = shapes.SceneSpec(classes=4, min_scale=0.3, max_scale=0.7, max_objects=2, clutter=0.0)
    root = tmp_path / "easy"
    summary = generate_shapes(root, train=12, val=2, size=SIZE, seed=5, spec=spec)
    assert summary["num_classes"] == 5 and summary["scene"]["classes"] == 4
    assert (root / "classes.txt").read_text().split() == ["background", "plus", "ring", "triangle", "semicircle"]
    assert "4 object classes" in format_summary(summary)
    for i in range(14):
        _, cls, obj, _ = render_shapes_image(5, i, SIZE, spec)
        present = set(np.unique(cls).tolist()) - {255}
        assert present <= {0, 1, 2, 3, 4}
        assert 1 <= len(set(np.unique(obj).tolist()) - {0, 255}) <= 2
    # the default spec is the embedded dataset itself, byte for byte
    a = render_shapes_image(3, 7, SIZE)
    b = render_shapes_image(3, 7, SIZE, shapes.SceneSpec())
    assert all(np.array_equal(x, y) for x, y in zip(a[:3], b[:3]))


@pytest.mark.parametrize("bad, key", [({"classes": 0}, "classes"), ({"classes": 21}, "classes"),
                                      ({"min_scale": 0.8, "max_scale": 0.5}, "min_scale"),
                                      ({"clutter": -1}, "clutter")])
def test_scene_spec_rejects_bad_values(bad, key):
    with pytest.raises(SkipsegError, match=key):
        shapes.SceneSpec(**bad)


def test_pretraining_images_are_stored_as_the_dataset_stores_its_images(dataset):
    """The classification images go through the writer's JPEG encoding at the renderer's quality: a
    classifier trained on the raw renders does not recognise the same objects once compressed."""
    root, _ = dataset
    for path in sorted((root / "JPEGImages").glob("*.jpg")):
        rgb, _, _, quality = render_scene(1, int(path.stem.split("_")[1]), SIZE)
        assert np.array_equal(as_stored(rgb, quality), np.asarray(Image.open(path).convert("RGB"))), path
    checked = 0
    for index in range(5):
        rgb, cls_map, _, quality = render_scene(0, index, SIZE, OBJECT_SCENE, stream=(STREAMS["train"], 0))
        if (cls_map[(cls_map > 0) & (cls_map != IGNORE_INDEX)]).size:  # the first scene holds the object
            stored, raw = render_object(0, index, SIZE)[0], np.asarray(rgb)
            assert np.array_equal(stored, as_stored(rgb, quality)) and not np.array_equal(stored, raw)
            assert np.array_equal(render_object(0, index, SIZE, stored=False)[0], raw)
            checked += 1
    assert checked
