"""Cost of DeconvNet-style inference per 500×375 image: proposal generation, proposal-wise prediction
at several batch sizes (crops per forward) and the dense CRF. Run by `python -m bench.run --only
proposals,crf`.

Images are generated scenes (`skipseg.data.shapes`, rendered at 500×500 and cut to 500×375, the
usual VOC size). The model is a DeconvNet at `width` (random weights: the cost does not depend on
them) with 21 classes on the default fast path (`make_runtime(device, "auto", None)`). One untimed
warm-up pass over the first image (every batch size), then per timed image:
proposals, then each batch size; figures are medians over the timed images.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from bench.common import sync
from skipseg.data.shapes import render_shapes_image
from skipseg.data.transforms import normalize
from skipseg.core.runtime import Runtime
from skipseg.inference.aggregate import proposal_probs
from skipseg.inference.crf import CRFParams, dense_crf
from skipseg.inference.proposals import proposals
from skipseg.models import build_model


def timed(fn: Callable[[], Any], device: torch.device = torch.device("cpu")) -> tuple[float, Any]:
    """Seconds of one call (the device synchronised around it) and its result."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def scenes(count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` generated RGB scenes of 375×500 (uint8 (H, W, 3))."""
    return [np.ascontiguousarray(render_shapes_image(seed, i, 500)[0][:375]) for i in range(count)]


def proposal_inference(runtime: Runtime, width: float, k: int, images: int, batch_sizes: Sequence[int] = (1, 16),
                       seed: int = 0) -> dict[str, Any]:
    """Seconds per image of selective search and of proposal-wise inference (K = `k`) at each of
    `batch_sizes` crops per forward (1 = one crop at a time), medians over `images` timed images."""
    torch.manual_seed(0)
    model = runtime.prepare_model(build_model("deconvnet", width=width, num_classes=21).eval())
    pictures = scenes(images + 1, seed)
    rows = []
    for n, rgb in enumerate(pictures):
        t_prop, boxes = timed(lambda: proposals(rgb, k=k))
        tensor = normalize(torch.from_numpy(rgb.copy()).permute(2, 0, 1))
        if n == 0:  # warm-up: kernel selection for every batch shape
            for batch in batch_sizes:
                proposal_probs(model, tensor, boxes[: 2 * batch], runtime, "max", batch)
            continue
        row = {"boxes": len(boxes), "proposals_s": t_prop}
        for batch in batch_sizes:  # interleaved per image: a noisy neighbour slows every batch size alike
            row[f"batch_{batch}_s"], _ = timed(lambda: proposal_probs(model, tensor, boxes, runtime, "max", batch),
                                               runtime.device)
        rows.append(row)
        print(f"  image {n}: " + ", ".join(f"{key} {value:.3g}" for key, value in row.items()), flush=True)
    median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    return {"k": k, "width": width, "boxes": median["boxes"], "params": sum(p.numel() for p in model.parameters()),
            "runtime": {"device": str(runtime.device), "amp": str(runtime.amp_dtype),
                        "channels_last": runtime.channels_last},
            "proposals_s": median["proposals_s"],
            "seconds_by_batch": {batch: median[f"batch_{batch}_s"] for batch in batch_sizes}, "per_image": rows}


def smooth_probs(classes: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Class probabilities `[C, H, W]` shaped like a network's: softmax of upsampled coarse random logits."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, classes, height // 16 + 1, width // 16 + 1, generator=gen) * 4
    logits = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return logits[0].softmax(0).numpy()


def crf_seconds(images: int, classes: int = 21, warmup: bool = True) -> dict[str, Any]:
    """Seconds of `dense_crf` (default parameters) per 500×375 image with `classes` classes."""
    pictures = scenes(images + int(warmup))
    times = []
    for n, rgb in enumerate(pictures):
        probs = smooth_probs(classes, *rgb.shape[:2], seed=n)
        seconds, _ = timed(lambda: dense_crf(probs, rgb, CRFParams()))
        if n > 0 or not warmup:
            times.append(seconds)
    return {"classes": classes, "iterations": CRFParams().iterations, "image_size": [375, 500],
            "median_s": statistics.median(times), "best_s": min(times), "times_s": times}
