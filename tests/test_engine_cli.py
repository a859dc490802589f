"""train → evaluate → predict through the command line, as a user runs them."""
from __future__ import annotations

import json
import shutil

import numpy as np
import torch
import pytest
from PIL import Image

from skipseg.cli import main

TINY = ["model.width=0.0625", "data.crop_size=32", "data.workers=0", "train.batch_size=2",
        "train.iterations=3", "train.val_every=3", "train.log_every=1", "train.precision=fp32"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, shapes_root):
    folder = tmp_path_factory.mktemp("cli")
    config = folder / "tiny.yaml"
    config.write_text(f"model:\n  name: fcn16s\ndata:\n  root: {shapes_root}\n")
    assert main(["train", str(config), *TINY, "--out", str(folder / "run"), "--no-progress"]) == 0
    return folder / "run"


def test_train_writes_a_complete_run(trained_run):
    assert (trained_run / "checkpoints" / "best.pt").is_file()
    assert (trained_run / "checkpoints" / "last.pt").is_file()
    header, *rows = (trained_run / "metrics.csv").read_text().splitlines()
    assert header.startswith("iteration,split,loss,lr")
    assert sum(",train," in row for row in rows) == 3 and sum(",val," in row for row in rows) == 1


def test_train_from_a_run_with_other_classes_says_what_it_copied(tmp_path, shapes_root, capsys):
    """`init_from` a model of another label set: the backbone is copied, the class layers start
    afresh, and stderr says both (the user's only view of what the model started from)."""
    from skipseg.core.checkpoint import save_checkpoint
    from skipseg.models.registry import build_model

    source = build_model("fcn16s", width=0.0625, num_classes=5)
    save_checkpoint(tmp_path / "other.pt", {"model": source.state_dict(), "config": {"model": {"num_classes": 5}}})
    config = tmp_path / "tiny8.yaml"
    config.write_text(f"model:\n  name: fcn8s\n  init_from: {tmp_path / 'other.pt'}\ndata:\n  root: {shapes_root}\n")
    capsys.readouterr()
    for run in ("a", "b"):
        assert main(["train", str(config), *TINY, "--out", str(tmp_path / run), "--no-progress"]) == 0
        err = capsys.readouterr().err
        assert "copied backbone" in err and "5 classes there, 21 here: initial values for head.score_fr" in err
        assert err.count("copied backbone") == 1  # one handler, however often main() runs in a process


def test_evaluate_writes_scores_and_palette_predictions(tmp_path, trained_run, shapes_root):
    out = tmp_path / "eval"
    assert main(["evaluate", str(trained_run), "--data", str(shapes_root), "--save-pred", "--flip",
                 "--scales", "0.75,1", "--out", str(out), "--no-progress", "--workers", "0"]) == 0
    scores = json.loads((out / "metrics.json").read_text())
    assert {"pixel_acc", "mean_acc", "mean_iou", "fw_iou", "per_class_iou", "class_names", "num_images"} <= set(scores)
    assert 0 < scores["cross_entropy"] < 10  # nats per valid pixel of the flip/scale-averaged probabilities
    assert scores["num_images"] == 4 and len(scores["per_class_iou"]) == 21
    preds = sorted(out.glob("pred/*.png"))
    ids = (shapes_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert [p.stem for p in preds] == sorted(ids)
    with Image.open(preds[0]) as image:
        assert image.mode == "P" and image.size == (48, 48)
    # the saved predictions score to the same numbers with `skipseg score`
    gt = tmp_path / "gt"
    gt.mkdir()
    for image_id in ids:
        shutil.copy(shapes_root / "SegmentationClass" / f"{image_id}.png", gt)
    assert main(["score", "--pred", str(out / "pred"), "--gt", str(gt),
                 "--json", str(tmp_path / "rescored.json")]) == 0
    rescored = json.loads((tmp_path / "rescored.json").read_text())
    assert rescored["mean_iou"] == pytest.approx(scores["mean_iou"])


def test_evaluating_two_runs_ensembles_them(tmp_path, trained_run, shapes_root):
    out = tmp_path / "ens"
    assert main(["evaluate", str(trained_run), str(trained_run / "checkpoints" / "last.pt"),
                 "--data", str(shapes_root), "--out", str(out), "--no-progress", "--workers", "0"]) == 0
    assert json.loads((out / "metrics.json").read_text())["runs"][1].endswith("last.pt")


def test_predict_writes_png_and_overlay_for_each_image(tmp_path, trained_run):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("odd", (61, 45)), ("square", (40, 40)), ("odd2", (61, 45))):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(images / f"{name}.jpg")
    Image.fromarray(rng.integers(0, 255, (33, 35), dtype=np.uint8), mode="L").save(images / "gray.png")
    out = tmp_path / "pred"
    assert main(["predict", str(trained_run), str(images), "--out", str(out), "--no-progress", "--workers", "0"]) == 0
    for name, size in (("odd", (45, 61)), ("square", (40, 40)), ("gray", (35, 33))):
        with Image.open(out / f"{name}.png") as label, Image.open(out / f"{name}_overlay.jpg") as overlay:
            assert label.mode == "P" and label.size == size and overlay.size == size


def test_bad_inputs_are_one_line_errors(tmp_path, trained_run, shapes_root, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(shapes_root, broken)
    victim = (broken / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    (broken / "JPEGImages" / f"{victim}.jpg").write_bytes(b"")
    capsys.readouterr()
    code = main(["evaluate", str(trained_run), "--data", str(broken), "--out", str(tmp_path / "e"),
                 "--no-progress", "--workers", "0"])
    err = capsys.readouterr().err
    assert code == 2 and f"{victim}.jpg" in err and "Traceback" not in err
    assert main(["predict", str(tmp_path / "nope"), str(tmp_path), "--out", str(tmp_path / "p")]) == 2
    assert "nope: no such checkpoint file or run folder" in capsys.readouterr().err
    assert main(["train", "--resume", str(trained_run), "train.bogus=1"]) == 2
    assert "unknown key 'train.bogus'" in capsys.readouterr().err


def test_broken_training_image_in_a_worker_is_one_clear_line(tmp_path, shapes_root, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(shapes_root, broken)
    for image in (broken / "JPEGImages").glob("*.jpg"):
        image.write_bytes(image.read_bytes()[:200])  # truncated JPEGs everywhere
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  root: {broken}\n")
    code = main(["train", str(config), *TINY, "data.workers=2", "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("skipseg: error: ") and "JPEGImages/shapes_" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_fixed_input_size_models_get_resized_inputs():
    import torch

    from skipseg.core.runtime import Runtime
    from skipseg.inference.predictor import predict_probs

    class FixedInput(torch.nn.Module):
        input_size = (32, 32)
        num_classes = 3

        def forward(self, x):
            assert x.shape[-2:] == (32, 32)
            return torch.zeros(x.shape[0], 3, 32, 32)

    runtime = Runtime(torch.device("cpu"), None, False)
    probs = predict_probs(FixedInput(), torch.randn(2, 3, 45, 61), runtime, flip=True)
    assert probs.shape == (2, 3, 45, 61)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 45, 61))


def test_proposal_wise_crf_ensemble_evaluation(tmp_path, trained_run, shapes_root):
    out = tmp_path / "edeconv"
    assert main(["evaluate", str(trained_run), str(trained_run / "checkpoints" / "last.pt"),
                 "--data", str(shapes_root), "--proposals", "5", "--aggregate", "sum", "--proposal-runs", "1",
                 "--crf", "--crf-params", "iterations=3", "--out", str(out), "--no-progress", "--workers", "0"]) == 0
    scores = json.loads((out / "metrics.json").read_text())
    assert scores["inference"] == {"flip": False, "scales": [1.0], "proposals": 5, "aggregate": "sum", "crf": True,
                                   "proposal_extend": 1.2, "min_box": 1000, "whole_image": "extra"}
    assert scores["num_images"] == 4
    assert len(list((out / "proposals").iterdir())) == 4  # proposals cached per image


@pytest.mark.parametrize("flags, message", [
    (["--proposal-runs", "3"], "--proposal-runs: run 3 does not exist"),
    (["--crf-params", "sxy=3"], "--crf-params: unknown key 'sxy'"),
    (["--flip"], "does not combine with --flip"),
])
def test_bad_inference_flags(tmp_path, trained_run, shapes_root, capsys, flags, message):
    code = main(["evaluate", str(trained_run), "--data", str(shapes_root), "--proposals", "3", *flags,
                 "--out", str(tmp_path / "e"), "--no-progress", "--workers", "0"])
    assert code == 2 and message in capsys.readouterr().err


def test_box_wise_run_is_trained_and_evaluated_on_its_grid(tmp_path, shapes_root):
    config = tmp_path / "box.yaml"
    config.write_text(f"model: {{name: skipnet, backbone: resnet18, head_channels: 8, grid: 5, tap: 2, kernel: 3}}\n"
                      f"data: {{root: {shapes_root}}}\n")
    run = tmp_path / "run"
    assert main(["train", str(config), *[o for o in TINY if not o.startswith("model.width")], "--out", str(run),
                 "--no-progress"]) == 0
    out = tmp_path / "eval"
    assert main(["evaluate", str(run), "--out", str(out), "--no-progress", "--workers", "0"]) == 0
    scores = json.loads((out / "metrics.json").read_text())
    assert scores["num_images"] == 4 and 0.0 <= scores["pixel_acc"] <= 1.0


def test_predict_gives_the_labels_evaluate_saved(tmp_path, trained_run, shapes_root):
    """The same run, the same val images: `predict`'s label PNGs equal `evaluate --save-pred`'s."""
    import torch

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    for name in ("best.pt", "last.pt"):  # random class scores, so that the maps vary within each image
        path = run / "checkpoints" / name
        state = torch.load(path, weights_only=True)
        generator = torch.Generator().manual_seed(0)
        # pool4's scores alone, centred over its channels: its 3x3 map's features point different ways
        weight = torch.randn(state["model"]["head.score_pool4.weight"].shape, generator=generator)
        state["model"]["head.score_pool4.weight"] = weight - weight.mean(dim=1, keepdim=True)
        state["model"]["head.score_fr.weight"].zero_()
        torch.save(state, path)
    trained_run = run
    out = tmp_path / "eval"
    assert main(["evaluate", str(trained_run), "--data", str(shapes_root), "--save-pred", "--out", str(out),
                 "--no-progress", "--workers", "0"]) == 0
    ids = (shapes_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    images = tmp_path / "images"
    images.mkdir()
    for image_id in ids:
        shutil.copy(next((shapes_root / "JPEGImages").glob(f"{image_id}.*")), images)
    assert main(["predict", str(trained_run), str(images), "--out", str(tmp_path / "pred"), "--no-progress",
                 "--workers", "0"]) == 0
    varied = False
    for image_id in ids:
        with Image.open(out / "pred" / f"{image_id}.png") as a, Image.open(tmp_path / "pred" / f"{image_id}.png") as b:
            saved, predicted = np.array(a), np.array(b)
        assert np.array_equal(saved, predicted), image_id
        varied |= len(np.unique(saved)) > 1
    assert varied  # not a trivially constant map on every image


def test_version_names_the_package_torch_and_the_device(capsys):
    from importlib.metadata import version

    import torchvision

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"skipseg {version('skipseg')} (torch {torch.__version__}, "
                           f"torchvision {torchvision.__version__}; cpu: {torch.get_num_threads()} threads, ")
    assert line.endswith(("fp32)", "bfloat16 autocast)"))
