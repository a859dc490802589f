"""The fully connected CRF: it cleans noisy probabilities along colour edges, returns probabilities."""
from __future__ import annotations

import numpy as np
import pytest

from skipseg.errors import SkipsegError
from skipseg.inference.crf import CRFParams, dense_crf


def _two_regions(height: int = 47, width: int = 63, classes: int = 3, seed: int = 0):
    """An image with a red left part and a blue right part (slightly noisy), the matching labels,
    and probabilities that favour the right class only weakly (about a third of the pixels wrong)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((height, width), np.int64)
    truth[:, width // 2 + 3 :] = 1
    colours = np.array([[200, 40, 40], [30, 60, 200]])
    image = np.clip(colours[truth] + rng.integers(-10, 11, (height, width, 3)), 0, 255).astype(np.uint8)
    logits = rng.normal(0, 1.5, (classes, height, width))
    logits[truth, np.arange(height)[:, None], np.arange(width)[None]] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(0)
    return image, truth, probs


def test_crf_follows_the_colour_regions() -> None:
    image, truth, probs = _two_regions()
    image.flags.writeable = probs.flags.writeable = False  # as np.asarray(PIL image) gives
    before = (probs.argmax(0) == truth).mean()
    out = dense_crf(probs, image)
    after = (out.argmax(0) == truth).mean()
    assert out.shape == probs.shape and out.dtype == np.float32
    assert np.allclose(out.sum(0), 1, atol=1e-4) and (out >= 0).all()
    assert before < 0.8 and after > 0.97


def test_crf_defaults_and_zero_iterations() -> None:
    assert CRFParams() == CRFParams(3, 3, 20, 3, 5, 10)
    image, _, probs = _two_regions(20, 25, classes=4, seed=1)
    same = dense_crf(probs.astype(np.float32), image, CRFParams(iterations=0))  # softmax(-unary) = p
    assert np.allclose(same, probs, atol=1e-5)


def test_crf_errors() -> None:
    image, _, probs = _two_regions(10, 12)
    with pytest.raises(SkipsegError, match=r"must be \(10, 12, 3\) uint8"):
        dense_crf(probs, image[:, :11])
    with pytest.raises(SkipsegError, match=r"must be \(10, 12, 3\) uint8"):
        dense_crf(probs, image.astype(np.float32))
    with pytest.raises(SkipsegError, match=r"\[C, H, W\]"):
        dense_crf(probs[0], image)
    with pytest.raises(SkipsegError, match="crf.bilateral_srgb"):
        CRFParams(bilateral_srgb=0)
    with pytest.raises(SkipsegError, match="crf.iterations"):
        CRFParams(iterations=2.5)


def _direct_pydensecrf(probs: np.ndarray, image: np.ndarray, p: CRFParams) -> np.ndarray:
    """The dense CRF written straight against pydensecrf, independent of the wrapper."""
    import pydensecrf.densecrf as dcrf

    c, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(np.clip(probs, p.min_prob, 1.0)).reshape(c, -1), np.float32))
    crf.addPairwiseGaussian(sxy=p.gaussian_sxy, compat=p.gaussian_compat)
    crf.addPairwiseBilateral(sxy=p.bilateral_sxy, srgb=p.bilateral_srgb, rgbim=np.ascontiguousarray(image),
                             compat=p.bilateral_compat)
    return np.asarray(crf.inference(p.iterations), np.float32).reshape(c, h, w)


def test_crf_equals_a_direct_pydensecrf_call_with_non_default_parameters() -> None:
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(4, 13, 17)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    image = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    params = CRFParams(gaussian_sxy=2.0, gaussian_compat=4.0, bilateral_sxy=11.0, bilateral_srgb=7.0,
                       bilateral_compat=6.0, iterations=3, min_prob=1e-6)
    ours = dense_crf(probs, image, params)
    assert np.allclose(ours, _direct_pydensecrf(probs, image, params), atol=1e-6)
    swapped = CRFParams(gaussian_sxy=11.0, gaussian_compat=6.0, bilateral_sxy=2.0, bilateral_srgb=7.0,
                        bilateral_compat=4.0, iterations=3, min_prob=1e-6)
    assert not np.allclose(ours, _direct_pydensecrf(probs, image, swapped), atol=1e-3)  # the test sees a swap
