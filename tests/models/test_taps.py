"""Automatic taps of torchvision backbones (traced on the meta device) and `skipseg models taps`."""
from __future__ import annotations

import json

import pytest
import torch

from skipseg.cli import main
from skipseg.errors import SkipsegError
from skipseg.models.taps import TorchvisionBackbone, find_taps, tap_geometry

# backbone -> (some expected (name, channels, stride), the top)
EXPECTED = {
    "resnet50": ([("relu", 64, 2), ("layer1.0", 256, 4), ("layer2.3", 512, 8), ("layer3.5", 1024, 16)],
                 ("layer4.2", 2048, 32)),
    "vgg16": ([("features.3", 64, 1), ("features.8", 128, 2), ("features.15", 256, 4), ("features.22", 512, 8),
               ("features.29", 512, 16)], ("features.30", 512, 32)),
    "mobilenet_v3_large": ([("features.1", 16, 2), ("features.3", 24, 4), ("features.6", 40, 8),
                            ("features.12", 112, 16)], ("features.16", 960, 32)),
    "inception_v3": ([("Conv2d_2b_3x3", 64, 2), ("Conv2d_4a_3x3", 192, 4), ("Mixed_5b", 256, 8), ("Mixed_5d", 288, 8),
                      ("Mixed_6a", 768, 16), ("Mixed_6e", 768, 16), ("Mixed_7b", 2048, 32)], ("Mixed_7c", 2048, 32)),
    "convnext_tiny": ([("features.0", 96, 4), ("features.3.2", 192, 8), ("features.5.8", 384, 16)],
                      ("features.7.2", 768, 32)),
    "efficientnet_b0": ([("features.0", 32, 2), ("features.2.1", 24, 4), ("features.5.2", 112, 16)],
                        ("features.8", 1280, 32)),
}


@pytest.mark.parametrize("backbone", sorted(EXPECTED))
def test_found_taps(backbone):
    taps = find_taps(backbone)
    found = [(t.name, t.channels, t.stride) for t in taps]
    some, top = EXPECTED[backbone]
    assert set(some) <= set(found)
    assert found[-1] == top
    strides = [t.stride for t in taps]
    assert strides == sorted(strides) and strides[-1] == 32
    assert len(set(found)) == len(found)
    # the last tap at each stride is marked as a stage end, and only those
    assert [t.name for t in taps if t.stage_end] == [t.name for i, t in enumerate(taps)
                                                      if i == len(taps) - 1 or taps[i + 1].stride != t.stride]


def test_shapes_at_a_size_and_no_duplicate_layers():
    taps = {t.name: t for t in find_taps("inception_v3", (559, 559))}
    assert [taps[n].shape for n in ("Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5b", "Mixed_6e", "Mixed_7c")] == \
        [(277, 277), (136, 136), (67, 67), (33, 33), (16, 16)]
    # ConvNeXt's downsampling LayerNorm repeats the stage's last map: not a tap of its own
    assert "features.2.0" not in {t.name for t in find_taps("convnext_tiny")}


def test_backbone_forward_matches_the_found_geometry():
    names = ["features.1", "features.3", "features.8", "features.12"]
    backbone = TorchvisionBackbone("mobilenet_v3_small", names).eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 61, 45))
    assert list(out) == names
    for info in backbone.feature_info:
        h, w = out[info.name].shape[-2:]
        assert (h, w) == (-(-61 // info.stride), -(-45 // info.stride))  # 'same' convs: ceil(size / stride)
        assert out[info.name].shape[1] == info.channels
    with pytest.raises(SkipsegError, match="not a feature map of mobilenet_v3_small"):
        tap_geometry("mobilenet_v3_small", ["features.99"])


def test_models_taps_command(capsys):
    assert main(["models", "taps", "resnet50", "--size", "97", "65"]) == 0
    text = capsys.readouterr().out
    assert "layer4.2" in text and "2048" in text and "4 x 3" in text
    assert main(["models", "taps", "vgg16", "--json", "--stages"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [t["stride"] for t in listing["taps"]] == [1, 2, 4, 8, 16, 32]
    assert main(["models", "taps", "resnet7"]) == 2
    assert "unknown torchvision classifier 'resnet7'" in capsys.readouterr().err
    assert main(["models", "taps", "inception_v3", "--size", "60", "60"]) == 2
    assert "too small" in capsys.readouterr().err
