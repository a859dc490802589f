"""ONNX export: every registered model exports, dynamic axes as the model allows, and a file that
ONNX Runtime does not reproduce is never left behind."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from skipseg import build_model, list_models
from skipseg.cli import main
from skipseg.errors import SkipsegError
from skipseg.inference.export import export_onnx

onnxruntime = pytest.importorskip("onnxruntime")

TINY_SKIPNET = dict(backbone="resnet18", top="layer2", tap_names=["relu", "layer1"], tap=2, grid=9, head_channels=8)
DYNAMIC = {0: "batch", 2: "height", 3: "width"}
# name -> (build options, export options, dynamic axes of the output). Each export costs 3-12 s of
# CPU, so every registered model is exported once (checked below): dynamically where the dynamic
# graph has something of its own (FCN-8s's fusions and final crop, the skip net's resampling;
# FCN-16s through the command line test), statically for the rest (their ops are the same).
CASES = {
    "fcn32s": (dict(width=0.0625), dict(size=(37, 53), static=True), {}),
    "fcn8s": (dict(width=0.0625), dict(size=(37, 53)), DYNAMIC),
    "fcn8s_atonce": (dict(width=0.0625), dict(size=(37, 53), static=True), {}),
    "fcn32s_alexnet": (dict(width=0.0625), dict(size=(67, 83), static=True), {}),
    "fcn32s_googlenet": (dict(width=0.0625), dict(size=(37, 53), static=True), {}),
    "deconvnet": (dict(width=0.0625), {}, {0: "batch"}),
    "skipnet": (TINY_SKIPNET, dict(size=(67, 83)), {0: "batch"}),
    "skipnet-pixel": (dict(TINY_SKIPNET, mode="pixel"), dict(size=(67, 83)), DYNAMIC),
}
CLI_MODEL = "fcn16s"


def tiny(name: str, options: dict) -> nn.Module:
    """A tiny model with its zero-initialised score layers made random, so the logits vary."""
    torch.manual_seed(0)
    model = build_model(name.split("-")[0], num_classes=3, **options)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and not module.weight.any():
                module.weight.normal_(0, 0.1)
    return model


def test_the_cases_cover_every_registered_model():
    assert {name.split("-")[0] for name in CASES} | {CLI_MODEL} == set(list_models())


def other_inputs(report: dict) -> list[torch.Tensor]:
    """Inputs of sizes and batches that the export's own check did not use, along the dynamic axes."""
    n, _, h, w = report["checked"][0]
    axes = report["dynamic_axes"]["image"]
    sizes = [(3, h, w)] if 0 in axes else []
    return [torch.randn(n, 3, h2, w2) for n, h2, w2 in sizes + ([(1, 50, 41), (2, 64, 64)] if 2 in axes else [])]


@pytest.mark.parametrize("case", CASES)
def test_every_model_exports_and_matches_pytorch(tmp_path, case):
    options, export_options, out_axes = CASES[case]
    model = tiny(case, options)
    report = export_onnx(model, tmp_path / "m.onnx", **export_options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary file left
    assert report["bytes"] == (tmp_path / "m.onnx").stat().st_size > 0 and report["opset"] >= 18
    assert report["dynamic_axes"]["logits"] == out_axes
    assert report["max_abs_diff"] <= 1e-3 * report["logit_scale"] and report["logit_scale"] > 0
    assert model.training  # the export leaves the module's mode as it was
    static = export_options.get("static", False)
    assert len(report["checked"]) == (1 if static else 2)
    if 2 in out_axes:  # two different odd-shaped inputs were checked, and the names say H, W stay
        assert len({tuple(c[2:]) for c in report["checked"]}) == 2
        assert report["output_shape"] == ["batch", 3, "height", "width"]
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    model.eval()
    for x in other_inputs(report):
        with torch.no_grad():
            expected = model(x).numpy()
        np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], expected, atol=1e-5, rtol=1e-4)


def test_bad_arguments_are_one_line_errors(tmp_path):
    model = build_model("deconvnet", num_classes=3, width=0.0625)
    with pytest.raises(SkipsegError, match="DeconvNet takes exactly 224x224 inputs, not 100x100"):
        export_onnx(model, tmp_path / "d.onnx", size=(100, 100))
    with pytest.raises(SkipsegError, match="does not exist"):
        export_onnx(model, tmp_path / "no" / "d.onnx")
    with pytest.raises(SkipsegError, match="--opset: 11: the dynamo exporter writes opsets 18 to"):
        export_onnx(model, tmp_path / "d.onnx", opset=11)
    with pytest.raises(SkipsegError, match="--size: expected two positive integers"):
        export_onnx(build_model("fcn32s", num_classes=3, width=0.0625), tmp_path / "d.onnx", size=(0, 9))
    assert not list(tmp_path.iterdir())


class ExportsDifferently(nn.Module):
    """Its exported graph adds 1 to the logits: what a wrongly exported op looks like."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)  # [N, 2, H, W]
        return y + 1.0 if torch.compiler.is_exporting() else y


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum() > 0 else -x  # control flow on values: not exportable


def test_a_file_that_disagrees_with_pytorch_is_not_written(tmp_path):
    target = tmp_path / "bad.onnx"
    target.write_bytes(b"an older file")
    with pytest.raises(SkipsegError, match=r"bad\.onnx: ONNX Runtime and PyTorch disagree: max \|diff\|"):
        export_onnx(ExportsDifferently(), target, size=(9, 11))
    assert target.read_bytes() == b"an older file"  # untouched, and no temporary file beside it
    assert [p.name for p in tmp_path.iterdir()] == ["bad.onnx"]
    with pytest.raises(SkipsegError, match=r"bad\.onnx: torch\.onnx\.export failed"):
        export_onnx(DataDependent(), target, size=(9, 11))
    assert [p.name for p in tmp_path.iterdir()] == ["bad.onnx"]


def test_export_command_on_a_trained_run(tmp_path, shapes_root, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(f"model:\n  name: {CLI_MODEL}\n  width: 0.0625\ndata:\n  root: {shapes_root}\n")
    run = tmp_path / "run"
    assert main(["train", str(config), "data.crop_size=32", "data.workers=0", "train.batch_size=2",
                 "train.iterations=1", "train.val_every=100", "train.precision=fp32",
                 "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--onnx", str(tmp_path / "run.onnx"), "--size", "45", "61"]) == 0
    out = capsys.readouterr().out
    assert f"exported {CLI_MODEL} ->" in out and "dynamic axes: batch, height, width" in out
    assert "output logits [batch, 21, height, width]" in out and "max |diff|" in out
    session = onnxruntime.InferenceSession(str(tmp_path / "run.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": np.zeros((1, 3, 33, 47), np.float32)})[0].shape == (1, 21, 33, 47)
    assert main(["export", str(tmp_path / "nope"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert main(["export", str(run), "--onnx", str(tmp_path / "x" / "y.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("skipseg: error: ") for line in err)
    assert "nope" in err[0] and "does not exist" in err[1]
