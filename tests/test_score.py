"""`skipseg score` end to end on PNG folders written here."""
from __future__ import annotations

import json

import numpy as np
import pytest

from skipseg.cli import main
from skipseg.data.palette import VOC_CLASSES, save_label_png
from skipseg.metrics import score_folders

V = 255

# Two images. Over both, the valid pixels (gt, pred) are:
#   image a (2×3): gt [[0,0,1],[1,V,2]]  pred [[0,1,1],[0,2,2]]  → (0,0) (0,1) (1,1) (1,0) (2,2)
#   image b (1×4): gt [[0,0,1,V]]        pred [[0,0,2,0]]        → (0,0) (0,0) (1,2)
# rows = gt: [[3,1,0],[1,1,1],[0,0,1]]; t = (4,3,1), column sums (4,2,2), diagonal (3,1,1)
GT = {
    "a": np.array([[0, 0, 1], [1, V, 2]]),
    "b": np.array([[0, 0, 1, V]]),
}
PRED = {
    "a": np.array([[0, 1, 1], [0, 2, 2]]),
    "b": np.array([[0, 0, 2, 0]]),
}
MATRIX = [[3, 1, 0], [1, 1, 1], [0, 0, 1]]
IOU = [3 / 5, 1 / 4, 1 / 2]  # 3/(4+4-3), 1/(3+2-1), 1/(1+2-1)


def write_folder(folder, labels):
    folder.mkdir(parents=True, exist_ok=True)
    for stem, label in labels.items():
        save_label_png(folder / f"{stem}.png", label)
    return folder


@pytest.fixture
def folders(tmp_path):
    return write_folder(tmp_path / "pred", PRED), write_folder(tmp_path / "gt", GT)


def test_score_writes_json_with_hand_computed_values(folders, tmp_path, capsys):
    pred, gt = folders
    save_label_png(pred / "extra.png", np.zeros((5, 5)))  # no ground truth: ignored
    out = tmp_path / "out" / "scores.json"
    assert main(["score", "--pred", str(pred), "--gt", str(gt), "--num-classes", "3",
                 "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["confusion"] == MATRIX
    assert s["num_images"] == 2
    assert s["pixel_acc"] == pytest.approx(5 / 8)
    assert s["mean_acc"] == pytest.approx((3 / 4 + 1 / 3 + 1) / 3)
    assert s["per_class_iou"] == pytest.approx(IOU)
    assert s["mean_iou"] == pytest.approx((3 / 5 + 1 / 4 + 1 / 2) / 3)
    assert s["fw_iou"] == pytest.approx((4 * 3 / 5 + 3 * 1 / 4 + 1 * 1 / 2) / 8)
    assert s["class_names"] == ["class_0", "class_1", "class_2"]
    printed = capsys.readouterr().out
    assert "60.00" in printed and "25.00" in printed and "62.50" in printed


def test_classes_file_sets_names_and_count(folders, tmp_path):
    pred, gt = folders
    names = tmp_path / "names.txt"
    names.write_text("sky\nroad\ncar\n\n")
    out = tmp_path / "s.json"
    assert main(["score", "--pred", str(pred), "--gt", str(gt), "--classes", str(names),
                 "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["class_names"] == ["sky", "road", "car"]
    assert s["per_class_iou"] == pytest.approx(IOU)


def test_default_is_the_21_voc_classes(folders):
    pred, gt = folders
    s = score_folders(pred, gt)
    assert s["class_names"] == list(VOC_CLASSES)
    assert s["per_class_iou"][:3] == pytest.approx(IOU)
    assert s["per_class_iou"][3:] == [None] * 18
    assert s["mean_iou"] == pytest.approx((3 / 5 + 1 / 4 + 1 / 2) / 3)  # absent classes left out


def test_missing_prediction_is_an_error_naming_the_stems(tmp_path, capsys):
    gt = write_folder(tmp_path / "gt", {f"img{i}": GT["b"] for i in range(8)})
    pred = write_folder(tmp_path / "pred", {"img0": PRED["b"]})
    assert main(["score", "--pred", str(pred), "--gt", str(gt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skipseg: error:") and len(err.strip().splitlines()) == 1
    assert "7 of 8" in err and "img1" in err and "img7" not in err  # first few + count


def test_size_mismatch_names_the_file(folders, capsys):
    pred, gt = folders
    save_label_png(pred / "b.png", np.zeros((2, 4)))
    assert main(["score", "--pred", str(pred), "--gt", str(gt), "--num-classes", "3"]) == 2
    err = capsys.readouterr().err
    assert "b.png" in err and "4×2" in err and "4×1" in err


def test_prediction_outside_classes_names_the_file(folders, capsys):
    pred, gt = folders
    save_label_png(pred / "a.png", np.full((2, 3), 7))
    assert main(["score", "--pred", str(pred), "--gt", str(gt), "--num-classes", "3"]) == 2
    err = capsys.readouterr().err
    assert "a.png" in err and "[0, 3)" in err


def test_bad_class_arguments(folders, tmp_path, capsys):
    pred, gt = folders
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert main(["score", "--pred", str(pred), "--gt", str(gt), "--classes", str(empty)]) == 2
    assert "empty.txt" in capsys.readouterr().err
    gap = tmp_path / "gap.txt"
    gap.write_text("sky\n\nroad\n")
    assert main(["score", "--pred", str(pred), "--gt", str(gt), "--classes", str(gap)]) == 2
    assert "gap.txt: line 2 is blank" in capsys.readouterr().err
    assert main(["score", "--pred", str(pred), "--gt", str(gt), "--num-classes", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err
    assert main(["score", "--pred", str(pred), "--gt", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
