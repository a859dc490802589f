"""`data check`: each defect caught on files the test breaks, the same message on load, the CLI."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from skipseg.cli import main
from skipseg.data.check import DataError, Problem, check_sample
from skipseg.data.datasets import check_dataset
from skipseg.data.palette import save_label_png
from skipseg.data.shapes.render import SceneSpec
from skipseg.data.voc import SegmentationDataset

TRAIN_ID = "2007_000039"  # second id of the fixture's train split (also in trainval)


def _truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def missing_image(data):
    data.image(TRAIN_ID).unlink()
    return data.image(TRAIN_ID), "image not found"


def missing_mask(data):
    data.mask(TRAIN_ID).unlink()
    return data.mask(TRAIN_ID), "mask not found"


def truncated_jpeg(data):
    _truncate(data.image(TRAIN_ID))
    return data.image(TRAIN_ID), "unreadable image (OSError: image file is truncated"


def garbage_image(data):
    data.image(TRAIN_ID).write_bytes(b"this is not a JPEG at all" * 20)
    return data.image(TRAIN_ID), "unreadable image (UnidentifiedImageError: cannot identify image file"


def zero_byte_image(data):
    data.image(TRAIN_ID).write_bytes(b"")
    return data.image(TRAIN_ID), "empty file (0 bytes)"


def zero_byte_mask(data):
    data.mask(TRAIN_ID).write_bytes(b"")
    return data.mask(TRAIN_ID), "empty file (0 bytes)"


def truncated_mask(data):
    _truncate(data.mask(TRAIN_ID), keep=0.5)
    return data.mask(TRAIN_ID), "unreadable mask"


def rgb_mask(data):
    Image.open(data.mask(TRAIN_ID)).convert("RGB").save(data.mask(TRAIN_ID))
    return data.mask(TRAIN_ID), "mask is a RGB image, expected a palette (P) or index (L) image"


def mask_size_mismatch(data):
    save_label_png(data.mask(TRAIN_ID), data.labels[TRAIN_ID][:, :60])
    return data.mask(TRAIN_ID), "mask size 60x45 differs from image size 61x45"


def labels_out_of_range(data):
    label = data.labels[TRAIN_ID].copy()
    label[0, 0], label[0, 1], label[5, 5] = 21, 254, 77
    save_label_png(data.mask(TRAIN_ID), label)
    return data.mask(TRAIN_ID), "label values outside [0, 21) and 255: 21, 77, 254"


def object_mask_size(data):
    save_label_png(data.object_mask(TRAIN_ID), data.objects[TRAIN_ID][:40])
    return data.object_mask(TRAIN_ID), "object mask size 61x40 differs from image size 61x45"


def empty_split_file(data):
    data.split_file("val").write_text("\n\n")
    return data.split_file("val"), "split file is empty (no ids)"


SAMPLE_DEFECTS = [
    missing_image, missing_mask, truncated_jpeg, garbage_image, zero_byte_image, zero_byte_mask,
    truncated_mask, rgb_mask, mask_size_mismatch, labels_out_of_range,
]


def test_clean_dataset_passes(tiny_voc):
    assert check_dataset(tiny_voc.root) == []
    assert check_dataset(tiny_voc.root, split="val", workers=1) == []
    for image_id in tiny_voc.labels:
        assert check_sample(tiny_voc.image(image_id), tiny_voc.mask(image_id), 21) == []


ALL_DEFECTS = SAMPLE_DEFECTS + [object_mask_size, empty_split_file]


@pytest.mark.parametrize("defect", ALL_DEFECTS, ids=lambda f: f.__name__)
def test_each_defect_is_caught(tiny_voc, defect):
    path, message = defect(tiny_voc)
    problems = check_dataset(tiny_voc.root)
    assert len(problems) == 1, problems  # the id is in train and trainval: still reported once
    assert problems[0].path == str(path)
    assert problems[0].message.startswith(message), problems[0].message
    assert str(problems[0]) == f"{path}: {problems[0].message}"


@pytest.mark.parametrize("defect", SAMPLE_DEFECTS, ids=lambda f: f.__name__)
def test_loading_raises_the_same_message(tiny_voc, defect):
    defect(tiny_voc)
    [problem] = check_dataset(tiny_voc.root, split="train")
    dataset = SegmentationDataset(tiny_voc.root, "train")
    index = dataset.ids.index(TRAIN_ID)
    with pytest.raises(DataError) as info:
        dataset[index]
    assert str(info.value) == str(problem)
    assert info.value.problems == [problem]
    assert check_sample(dataset.image_path(index), dataset.mask_path(index), 21) == [problem]
    dataset.load(0)  # the others still load


def test_object_mask_defect_raises_on_load_objects(tiny_voc):
    path, _ = object_mask_size(tiny_voc)
    [problem] = check_dataset(tiny_voc.root)
    dataset = SegmentationDataset(tiny_voc.root, "train")
    with pytest.raises(DataError) as info:
        dataset.load_objects(dataset.ids.index(TRAIN_ID))
    assert str(info.value) == str(problem)


def test_missing_split_file(tiny_voc):
    problems = check_dataset(tiny_voc.root, split="test")
    message = "split file not found (available splits: train, trainval, val)"
    assert problems == [Problem(str(tiny_voc.split_file("test")), message)]
    [problem] = check_dataset(tiny_voc.root, split="seg11valid")
    assert "FCN" in problem.message and "736" in problem.message


def test_no_split_files_at_all(tiny_voc):
    for path in tiny_voc.split_file("x").parent.glob("*.txt"):
        path.unlink()
    [problem] = check_dataset(tiny_voc.root)
    assert problem.message == "no split files (*.txt)"


def test_every_problem_reported_and_the_check_goes_on(tiny_voc):
    """Several defects in several files, two in one file: all of them, in file order."""
    missing_image(tiny_voc)  # 2007_000039: image gone
    label = tiny_voc.labels[TRAIN_ID].copy()
    label[0, 0] = 99
    save_label_png(tiny_voc.mask(TRAIN_ID), label)  # ... and a bad label in its mask too
    rgb = Image.open(tiny_voc.mask("2009_000010")).convert("RGB")
    rgb.save(tiny_voc.mask("2009_000010"))  # a val sample
    _truncate(tiny_voc.image("2007_000032"))  # the first train sample
    empty_split_file(tiny_voc)  # and the val list is emptied: its samples are still in trainval
    problems = check_dataset(tiny_voc.root)
    reported = [(Path(p.path).name, p.message.split(" (")[0].split(",")[0]) for p in problems]
    assert reported == [
        ("val.txt", "split file is empty"),
        ("2007_000032.jpg", "unreadable image"),
        ("2007_000039.jpg", "image not found"),
        ("2007_000039.png", "label values outside [0"),
        ("2009_000010.png", "mask is a RGB image"),
    ]


def test_truncated_image_caught_even_if_pil_is_lenient(tiny_voc, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    path, message = truncated_jpeg(tiny_voc)
    [problem] = check_dataset(tiny_voc.root)
    assert problem.message.startswith(message)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the user's setting is restored


def test_num_classes_override_and_classes_txt(make_tiny_voc):
    data = make_tiny_voc(classes=["background", "a", "b", "c"])
    assert check_dataset(data.root) == []
    problems = check_dataset(data.root, num_classes=2)
    assert problems and all("label values outside [0, 2) and 255" in p.message for p in problems)
    (data.root / "classes.txt").write_text("background\nbackground\n")
    [problem] = check_dataset(data.root, num_classes=4)
    assert problem.path.endswith("classes.txt") and "duplicate" in problem.message


# --- the command line ----------------------------------------------------------------------------------
def test_cli_check_clean(tiny_voc, capsys):
    assert main(["data", "check", str(tiny_voc.root)]) == 0
    assert capsys.readouterr().out.strip() == "no problems found"


def test_cli_check_reports_each_problem_and_exits_1(tiny_voc, capsys):
    missing_mask(tiny_voc)
    tiny_voc.image("2009_000010").write_bytes(b"")
    assert main(["data", "check", str(tiny_voc.root)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [
        f"{tiny_voc.mask(TRAIN_ID)}: mask not found",
        f"{tiny_voc.image('2009_000010')}: empty file (0 bytes)",
        "2 problems in 2 files",
    ]
    assert main(["data", "check", str(tiny_voc.root), "--split", "train"]) == 1
    assert main(["data", "check", str(tiny_voc.root), "--split", "val", "--num-classes", "21"]) == 1


def test_cli_check_errors(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nowhere")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    assert main(["data", "check", str(tmp_path), "--num-classes", "300"]) == 2


def test_cli_shapes_calls_the_generator(monkeypatch, tmp_path, capsys):
    calls = []

    def generate_shapes(out, train=200, val=50, size=128, seed=0, workers=0, progress=False, spec=None):
        calls.append(dict(out=out, train=train, val=val, size=size, seed=seed, workers=workers, spec=spec))
        return {"images": train + val}

    fake = types.ModuleType("skipseg.data.shapes")
    fake.generate_shapes = generate_shapes
    fake.SceneSpec = SceneSpec
    fake.format_summary = lambda summary: f"wrote {summary['images']} images"
    monkeypatch.setitem(sys.modules, "skipseg.data.shapes", fake)
    argv = ["data", "shapes", str(tmp_path / "out"), "--train", "3", "--val", "2"]
    argv += ["--size", "45", "--seed", "7", "--classes", "5", "--max-objects", "2"]
    assert main(argv + ["--workers", "2"]) == 0
    spec = SceneSpec(classes=5, max_objects=2)
    assert calls == [dict(out=tmp_path / "out", train=3, val=2, size=45, seed=7, workers=2, spec=spec)]
    assert capsys.readouterr().out.strip() == "wrote 5 images"


def test_generated_shapes_pass_the_check(tmp_path):
    shapes = pytest.importorskip("skipseg.data.shapes")
    shapes.generate_shapes(tmp_path / "shapes", train=6, val=3, size=64, seed=3)
    assert check_dataset(tmp_path / "shapes") == []
    dataset = SegmentationDataset(tmp_path / "shapes", "train")
    image, mask = dataset.load(0)
    assert image.size == (64, 64) and mask.shape == (64, 64) and dataset.load_objects(0).shape == (64, 64)
