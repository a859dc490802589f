"""The registry, `describe_model`, and `skipseg models [describe]` through the CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import skipseg
from skipseg.cli import main
from skipseg.errors import SkipsegError
from skipseg.models.registry import COMMON_OPTIONS, model_options

EXPECTED = ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce", "fcn32s_alexnet", "fcn32s_googlenet")
TINY = 1 / 16


def test_list_models() -> None:
    models = skipseg.list_models()
    assert set(EXPECTED) <= set(models)
    assert all(isinstance(d, str) and d and "\n" not in d for d in models.values())


def test_every_builder_takes_the_common_options() -> None:
    for name in skipseg.list_models():
        options = model_options(name)
        assert {k: options[k] for k in COMMON_OPTIONS} == {
            "num_classes": 21, "width": 1.0, "pretrained": None, "weights": None, "init_from": None
        }
    assert {"learnable_upsampling", "original_padding"} <= set(model_options("fcn8s"))
    assert "original_padding" not in model_options("fcn32s_googlenet")


def test_build_model_contract() -> None:
    # torchvision backbones are not width-scaled: the skip net gets a small one instead
    small = {"skipnet": {"backbone": "resnet18"}}
    for name in skipseg.list_models():
        model = skipseg.build_model(name, num_classes=4, **small.get(name, {"width": TINY})).eval()
        assert model.num_classes == 4
        size = getattr(model, "input_size", None) or (64, 64)  # DeconvNet takes 224x224 only
        taps = model.backbone(torch.randn(2, 3, *size))
        assert list(taps) == [info.name for info in model.backbone.feature_info]


def test_unknown_model_and_option_errors() -> None:
    with pytest.raises(SkipsegError, match="unknown model 'fcn4s'; valid models: fcn32s, fcn16s"):
        skipseg.build_model("fcn4s")
    with pytest.raises(SkipsegError, match="no option 'original_padding'; valid options: .*learnable_upsampling"):
        skipseg.build_model("fcn32s_alexnet", original_padding=True)
    for bad in ({"width": 0}, {"num_classes": 2.5}, {"num_classes": True}, {"learnable_upsampling": "yes"}):
        with pytest.raises(SkipsegError, match="invalid"):
            skipseg.build_model("fcn8s", **bad)


@pytest.mark.parametrize("name", EXPECTED)
def test_describe_every_model(name: str) -> None:
    info = skipseg.describe_model(name, size=(71, 90), width=TINY, num_classes=5)
    assert set(info) == {"name", "params", "output_shape", "taps"} and info["name"] == name
    assert info["output_shape"] == [5, 71, 90]
    # the same as a real model and a real forward
    model = skipseg.build_model(name, width=TINY, num_classes=5).eval()
    assert info["params"] == sum(p.numel() for p in model.parameters())
    with torch.inference_mode():
        taps = model.backbone(torch.zeros(1, 3, 71, 90))
    assert [t["name"] for t in info["taps"]] == list(taps)
    for tap, fi in zip(info["taps"], model.backbone.feature_info):
        assert set(tap) == {"name", "channels", "stride", "shape"}
        assert tap["channels"] == fi.channels == taps[tap["name"]].shape[1]
        assert tap["stride"] == fi.stride and tap["shape"] == list(taps[tap["name"]].shape[-2:])
    json.dumps(info)


def test_describe_width_one_and_init_options_are_not_loaded(tmp_path) -> None:
    info = skipseg.describe_model("fcn8s", size=(224, 224), weights=str(tmp_path / "not-read.pth"))
    assert info["params"] == 134_489_759
    assert [(t["name"], t["channels"], t["stride"], t["shape"]) for t in info["taps"]] == [
        ("pool1", 64, 2, [112, 112]), ("pool2", 128, 4, [56, 56]), ("pool3", 256, 8, [28, 28]),
        ("pool4", 512, 16, [14, 14]), ("pool5", 512, 32, [7, 7]), ("fc7", 4096, 32, [7, 7]),
    ]
    with pytest.raises(SkipsegError, match="minimum size is 35x35"):
        skipseg.describe_model("fcn32s_alexnet", size=(20, 64))


def test_cli_models_lists_the_registry(capsys) -> None:
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[::2]] == list(skipseg.list_models())
    sets = {name: line.split("pretrained: ")[1] for name, line in zip(skipseg.list_models(), lines[1::2])}
    assert all(value.startswith("imagenet") for value in sets.values())
    from skipseg.models.pretrained import shipped_cards

    for card in shipped_cards():  # each shipped file is offered by the models whose backbone it fits
        label = f"shapes ({card.backbone} width {card.width:g}"
        assert any(label in value for value in sets.values()), (label, sets)


def test_cli_models_describe(capsys) -> None:
    assert main(["models", "describe", "fcn16s", "width=0.0625", "num_classes=3", "--size", "45", "61", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == skipseg.describe_model("fcn16s", size=(45, 61), width=0.0625, num_classes=3)
    assert main(["models", "describe", "fcn32s_googlenet", "width=0.125"]) == 0
    text = capsys.readouterr().out
    assert "inception5b" in text and "21 x 224 x 224" in text


@pytest.mark.parametrize("argv,message", [
    (["models", "describe", "nope"], "unknown model 'nope'"),
    (["models", "describe", "fcn8s", "colour=red"], "no option 'colour'"),
    (["models", "describe", "fcn8s", "width"], "not of the form key=value"),
    (["models", "describe", "fcn32s_alexnet", "width=0.0625", "--size", "16", "16"], "minimum size"),
])
def test_cli_errors_exit_2(capsys, argv, message) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_import_is_lightweight() -> None:
    code = "import sys, skipseg; assert 'torch' not in sys.modules; print(skipseg.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0.1.0"


def test_describe_is_generic_and_falls_back_from_meta(monkeypatch) -> None:
    """A model only needs `backbone` with named taps; one whose forward the meta device cannot run
    (here `.item()`) is described by a real CPU forward instead."""
    from torch import nn

    from skipseg.models import registry
    from skipseg.models.backbones import StagedBackbone

    class TwoTaps(StagedBackbone):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(4, 6, 3, stride=2, padding=1)
            self._set_stages([("a", 4, [self.a]), ("b", 6, [self.b])])

    class Odd(nn.Module):
        def __init__(self, num_classes: int) -> None:
            super().__init__()
            self.backbone, self.num_classes = TwoTaps(), num_classes
            self.head = nn.Conv2d(6, num_classes, 1)

        def forward(self, x):
            taps = self.backbone(x)
            scale = float(taps["b"].mean().item() * 0 + 1)  # data-dependent: no meta kernel
            return nn.functional.interpolate(self.head(taps["b"]) * scale, size=x.shape[-2:])

    def odd(num_classes=21, width=1.0, pretrained=None, weights=None, init_from=None):
        return Odd(num_classes)

    monkeypatch.setitem(registry.MODELS, "odd", registry.ModelEntry("odd", odd, "test model"))
    info = skipseg.describe_model("odd", size=(30, 41), num_classes=2)
    assert info["output_shape"] == [2, 30, 41]
    assert info["taps"] == [
        {"name": "a", "channels": 4, "stride": 2, "shape": [15, 21]},
        {"name": "b", "channels": 6, "stride": 4, "shape": [8, 11]},
    ]
