"""Fully connected CRF post-processing (Krähenbühl & Koltun 2011) through `pydensecrf`.

The unary potential is `-log p` of the network's class probabilities (clipped away from 0); the
pairwise terms are a Gaussian smoothness kernel on position and a bilateral appearance kernel on
position and colour, with Potts compatibilities. The defaults are those of the DeconvNet
reference code: Gaussian sxy 3, compat 3; bilateral sxy 20, srgb 3, compat 5; 10 mean-field steps.
"""
from __future__ import annotations

import numpy as np

from skipseg.config import CRFParams
from skipseg.errors import SkipsegError

__all__ = ["CRFParams", "dense_crf"]


def dense_crf(probs: np.ndarray, image: np.ndarray, params: CRFParams | None = None) -> np.ndarray:
    """Refine class probabilities `[C, H, W]` (float, summing to 1 over C) with the (H, W, 3) uint8
    RGB `image`; returns the CRF's marginals, float32 `[C, H, W]` (each pixel sums to 1)."""
    import pydensecrf.densecrf as dcrf

    params = params or CRFParams()
    probs = np.asarray(probs)
    image = np.asarray(image)
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise SkipsegError(f"crf: probabilities must be [C, H, W], got shape {probs.shape}")
    num_classes, height, width = probs.shape
    if image.shape != (height, width, 3) or image.dtype != np.uint8:
        raise SkipsegError(f"crf: the image must be ({height}, {width}, 3) uint8 to match the probabilities, "
                           f"got {image.shape} {image.dtype}")
    if not np.isfinite(probs).all():
        raise SkipsegError("crf: probabilities contain NaN or infinity")
    unary = -np.log(np.clip(probs.astype(np.float32), params.min_prob, 1.0)).reshape(num_classes, -1)
    crf = dcrf.DenseCRF2D(width, height, num_classes)
    crf.setUnaryEnergy(np.require(unary, np.float32, ["C", "W"]))  # pydensecrf needs writable buffers
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
                             rgbim=np.require(image, np.uint8, ["C", "W"]), compat=params.bilateral_compat)
    q = crf.inference(params.iterations)
    return np.asarray(q, dtype=np.float32).reshape(num_classes, height, width)
