"""The width-scaled Inception-v3 (`models/inception.py`): torchvision's own `Inception3` built through
its `inception_blocks` hook; width 1 is torchvision's network, any width keeps its taps and geometry."""
from __future__ import annotations

import pytest
import torch
import torchvision

from skipseg.errors import SkipsegError
from skipseg.models import build_model
from skipseg.models.classifiers import build_pretrain_classifier
from skipseg.models.describe import describe_model
from skipseg.models.inception import inception_v3_classifier
from skipseg.models.taps import build_classifier, find_taps

PAPER_TAPS = ["Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5b", "Mixed_5d", "Mixed_6a", "Mixed_6e", "Mixed_7b", "Mixed_7c"]


def test_width_1_is_torchvisions_network_with_the_same_weights_and_output():
    torch.manual_seed(0)
    reference = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True, transform_input=True)
    reference.eval()
    ours = build_classifier("inception_v3", 1.0).eval()
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in reference.named_modules()]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    ours.load_state_dict(reference.state_dict())
    images = torch.randn(2, 3, 107, 131)  # odd sizes, above the network's 75-px minimum
    with torch.no_grad():
        torch.testing.assert_close(ours(images), reference(images))


@pytest.mark.parametrize("width", [0.25, 0.125, 0.5])
def test_a_width_scales_every_channel_but_the_image_input(width):
    reference = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).state_dict()
    with torch.device("meta"):
        narrow = inception_v3_classifier(width, num_classes=20).state_dict()
    assert narrow.keys() == reference.keys()
    for key, tensor in narrow.items():
        want = list(reference[key].shape)
        if key == "fc.weight":
            want = [20, int(2048 * width)]
        elif key == "fc.bias":
            want = [20]
        elif tensor.dim() > 0:
            want[0] = int(want[0] * width)
            if tensor.dim() == 4 and key != "Conv2d_1a_3x3.conv.weight":
                want[1] = int(want[1] * width)
        assert list(tensor.shape) == want, key
    model = build_pretrain_classifier("inception_v3", 20, width)
    assert model(torch.randn(2, 3, 80, 96)).shape == (2, 20)


@pytest.mark.parametrize("size, shapes", [
    (139, [67, 31, 15, 15, 7, 7, 3, 3]),  # the paper's 559-px geometry scaled: G = 15, taps 5-6 7x7, tap 7 = top
    (559, [277, 136, 67, 67, 33, 33, 16, 16]),  # the paper's: G = 67, taps 5-6 33x33, tap 7 = top 16x16
])
def test_the_papers_taps_at_a_quarter_width(size, shapes):
    found = {t.name: t for t in find_taps("inception_v3", (size, size), 0.25)}
    assert [found[name].shape for name in PAPER_TAPS] == [(s, s) for s in shapes]
    assert [found[name].channels for name in PAPER_TAPS] == [16, 48, 64, 72, 192, 192, 512, 512]
    with torch.device("meta"):
        info = describe_model("skipnet", size=(size, size), width=0.25, grid=shapes[2], tap=6)
    assert [t["shape"][0] for t in info["taps"]] == shapes and info["output_shape"] == [21, shapes[2], shapes[2]]


def test_a_width_that_splits_channels_unevenly_is_one_line():
    with pytest.raises(SkipsegError, match=r"model.width: 0.3 does not scale Inception-v3's channels to whole "
                                           r"numbers; use a multiple of 1/16"):
        build_model("skipnet", width=0.3, grid=5)
    with pytest.raises(SkipsegError, match="only vgg16, vgg16_bn, inception_v3 can be narrowed"):
        build_pretrain_classifier("resnet18", 20, 0.5)
