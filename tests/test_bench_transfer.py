"""bench.transfer on a tiny pretrained file and a tiny generated dataset: every figure is measured,
the JSON is written, and a file that is not a VGG16-BN is refused in one line."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is no installed package
    sys.path.insert(0, str(ROOT))

import bench.transfer as transfer  # noqa: E402
from skipseg.data.shapes import SceneSpec, generate_shapes
from skipseg.engine.pretrain import pretrain

TINY = ["pretrain.val_images=16", "train.batch_size=8", "train.warmup=2", "train.checkpoint_every=2"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("transfer")
    weights = folder / "vgg.pt"
    pretrain("vgg16_bn", weights, width=1 / 16, size=32, iterations=2, images=16, overrides=TINY, progress=False)
    data = folder / "data"
    generate_shapes(data, train=40, val=4, size=32, seed=1, spec=SceneSpec(classes=3, max_objects=2))
    return weights, data


def test_every_figure_is_measured_and_written(files, tmp_path, capsys):
    weights, data = files
    out = tmp_path / "transfer.json"
    assert transfer.main([str(weights), "--data", str(data), "--images", "30", "--crops", "24", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("heldout_stored", "heldout_raw"):
        assert 0 <= result[key] <= 1
    singles, probe = result["single_object_images"], result["crop_probe"]
    assert 0 < singles["count"] <= 30 and 0 <= singles["top1"] <= 1
    assert probe["crops"] == 24 and probe["object_classes"] == 3 and probe["chance"] == pytest.approx(1 / 3)
    assert 0 <= probe["heldout_top1"] <= 1 and 0 <= probe["train_top1"] <= 1
    assert f"wrote {out}" in capsys.readouterr().out


def test_a_file_of_another_backbone_is_refused(files, tmp_path, capsys):
    weights, data = files
    card = json.loads(weights.with_suffix(".json").read_text())
    other = tmp_path / "other.pt"
    other.write_bytes(weights.read_bytes())
    other.with_suffix(".json").write_text(json.dumps({**card, "backbone": "inception_v3"}))
    assert transfer.main([str(other), "--data", str(data), "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "inception_v3" in err and err.count("\n") == 1
