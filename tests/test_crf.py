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
