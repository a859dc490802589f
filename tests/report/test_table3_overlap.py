"""Table 3 says how many evaluation images each compared system trained on (through init_from too),
which mIoU is per cell and which per pixel, and keeps the published rows apart."""
from __future__ import annotations

import json

import yaml

from skipseg.config import Config, DataConfig, ModelConfig, config_to_dict
from skipseg.report.overlap import split_ids, training_ids
from skipseg.report.tables import PUBLISHED, table3


def _run(folder, root, split, init_from=None, name="fcn8s", mode=None, miou=0.5):
    """A finished run folder as `skipseg train` leaves it: config.yaml and an evaluation."""
    folder.mkdir(parents=True)
    model = ModelConfig(name=name, init_from=str(init_from) if init_from else None, options={"mode": mode})
    config = Config(model=model, data=DataConfig(root=str(root), train_split=split))
    (folder / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config)))
    (folder / "eval").mkdir()
    (folder / "eval" / "metrics.json").write_text(json.dumps(
        {"mean_iou": miou, "class_names": ["background", "a"], "per_class_iou": [0.9, 0.1],
         "runs": [str(folder)]}))
    return folder


def test_a_system_trained_on_evaluation_images_is_marked_with_the_count(shapes_root, tmp_path):
    val = split_ids(str(shapes_root), "val")
    assert val and not val & split_ids(str(shapes_root), "train")
    clean = _run(tmp_path / "clean", shapes_root, "train")
    leaky_parent = _run(tmp_path / "parent", shapes_root, "val")
    leaky = _run(tmp_path / "leaky", shapes_root, "train", init_from=leaky_parent)  # saw val at stage 1
    assert training_ids(leaky) == split_ids(str(shapes_root), "train") | val
    assert training_ids(tmp_path / "nowhere") is None
    records = [{"label": "6", "kernel": 7, "tap": "Mixed_6e", "mean_iou": 0.4, "cross_entropy": 0.5,
                "class_names": ["background", "a"], "per_class_iou": [0.89, 0.1]}]
    header, rows = table3(records, "skipnet", [("FCN-8s", str(clean / "eval")), ("Leaky", str(leaky)),
                                              ("Missing", str(tmp_path / "nowhere"))],
                          eval_ids=val, method_scored_on="cells", published=True,
                          method_train_ids=split_ids(str(shapes_root), "train"))
    assert header == ["Method", "Scored on", "Trained on eval images", "Background", "Mean IoU"]
    assert rows[0] == ["skipnet (tap 6, n = 7)", "cells", "0", "89.00", "40.00"]
    assert rows[1] == ["FCN-8s", "pixels", "0", "90.00", "50.00"]
    assert rows[2][0] == f"Leaky (not comparable: trained on {len(val)} of the {len(val)} evaluation images)"
    assert rows[2][1:3] == ["pixels", str(len(val))]
    assert rows[3][0].startswith("Missing (no metrics in")
    assert [r[0] for r in rows[4:]] == [name for name, _, _ in PUBLISHED]  # appended, never the first row
    assert rows[5][3:] == ["88.90", "59.20"]  # Hypercolumn, as the paper's Table 3


def test_a_box_wise_skip_net_is_scored_on_cells(shapes_root, tmp_path):
    skip = _run(tmp_path / "skip", shapes_root, "train", name="skipnet", mode="box")
    pixel = _run(tmp_path / "pixel", shapes_root, "train", name="skipnet", mode="pixel")
    _, rows = table3([], "skipnet", [("box", str(skip)), ("pixel", str(pixel))], eval_ids=set())
    assert [row[1] for row in rows] == ["cells", "pixels"]
