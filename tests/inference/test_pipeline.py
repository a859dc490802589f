"""`inference.pipeline`: what an ensemble and its CRF compute, checked against hand-made probabilities."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from skipseg.core.runtime import make_runtime
from skipseg.errors import SkipsegError
from skipseg.inference.aggregate import proposal_scores
from skipseg.inference.crf import CRFParams, dense_crf
from skipseg.inference.pipeline import InferenceOptions, make_probs_fn


def _tiny_model(seed: int) -> nn.Module:
    """A position-dependent pixel model (a 3x3 conv): two seeds give two different models."""
    torch.manual_seed(seed)
    return nn.Conv2d(3, 4, 3, padding=1).eval()


@pytest.fixture()
def image(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (11, 15, 3), dtype=np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(rgb).save(path)
    return path, rgb, torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255


def test_an_ensemble_is_the_mean_of_its_members_probabilities(image):
    path, _, x = image
    first, second = _tiny_model(0), _tiny_model(1)
    probs = make_probs_fn([first, second], lambda i: path, make_runtime("cpu", "fp32"), InferenceOptions())(x, [0])
    with torch.no_grad():
        expected = (first(x).softmax(1) + second(x).softmax(1)) / 2
    assert torch.allclose(probs, expected, atol=1e-6)
    assert not torch.allclose(first(x).softmax(1), second(x).softmax(1), atol=1e-3)  # the members differ


def test_the_crf_refines_the_ensemble_mean(image):
    path, rgb, x = image
    first, second = _tiny_model(0), _tiny_model(1)
    params = CRFParams(gaussian_sxy=2.0, bilateral_sxy=9.0, bilateral_srgb=5.0, iterations=4)
    options = InferenceOptions(crf=params)
    probs = make_probs_fn([first, second], lambda i: path, make_runtime("cpu", "fp32"), options)(x, [0])
    with torch.no_grad():
        mean = ((first(x).softmax(1) + second(x).softmax(1)) / 2)[0].numpy()
    assert np.allclose(probs[0].numpy(), dense_crf(mean, rgb, params), atol=1e-5)
    assert not np.allclose(probs[0].numpy(), mean, atol=1e-3)  # the CRF did run


def test_proposal_runs_must_exist(image):
    path, _, _ = image
    with pytest.raises(SkipsegError, match="--proposal-runs: run 3 does not exist"):
        make_probs_fn([_tiny_model(0)], lambda i: path, make_runtime("cpu", "fp32"),
                      InferenceOptions(proposals=5, proposal_runs=[2]))


def test_proposal_inference_crops_the_extended_boxes_and_aggregates_by_eq_1(image, monkeypatch):
    """The pipeline's boxes are the ranked proposals extended x1.2 and clipped; the result equals
    eq. 1 (pixel-wise max of G_i, zeros outside each box) computed by hand on those boxes."""
    from skipseg.inference import proposals as proposals_module

    path, rgb, batch = image  # 11 x 15
    ranked = np.array([[0, 0, 15, 11], [2, 1, 7, 6], [8, 3, 14, 10]])  # whole image first, then two boxes
    monkeypatch.setattr(proposals_module, "proposals", lambda *args, **kwargs: ranked)
    model = nn.Conv2d(3, 4, 1).eval()  # a 1x1 conv: a crop's scores are the image's scores at the same pixels
    model.input_size = None
    options = InferenceOptions(proposals=3, proposal_extend=1.2, proposal_batch=2)
    got = make_probs_fn([model], lambda i: path, make_runtime("cpu", "fp32"), options)(batch, [0])[0]
    # 5x5 -> 6x6 about (4.5, 3.5), top-left rounded half to even: (2, 0); 6x7 -> 7x8 about (11, 6.5): (8, 2)
    extended = [[0, 0, 15, 11], [2, 0, 8, 6], [8, 2, 15, 10]]
    with torch.no_grad():
        scores = model(batch)[0]
    maps = torch.zeros(3, *scores.shape)
    for i, box in enumerate(extended):  # G_i: one box's scores (crop -> 224² -> box), zeros outside it
        maps[i] = proposal_scores(model, batch[0], [box], make_runtime("cpu", "fp32"), "sum")
    expected = maps.max(0).values.softmax(0)
    assert torch.allclose(got, expected, atol=1e-5)
