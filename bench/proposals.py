"""Cost of DeconvNet-style inference: proposal generation, proposal-wise prediction (crops batched vs
one crop per forward) and the dense CRF, per 500×375 image.

    python -m bench.bench_proposals --width 0.25 --k 50 --images 2 --json bench/results/proposals.json

Images are generated scenes (`skipseg.data.shapes`, rendered at 500×500 and cut to 500×375, the
usual VOC size). The model is a DeconvNet at `--width` (random weights: the cost does not depend on
them) with 21 classes on the default fast path (`make_runtime(device, "auto", None)`). One untimed
warm-up pass over the first image's crops (batched and one at a time), then per timed image:
proposals, batched, one at a time; figures are medians over the timed images.
`python -m bench.run --only proposals,crf` runs the same functions inside the whole benchmark.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from skipseg.data.shapes import render_shapes_image
from skipseg.data.transforms import normalize
from skipseg.engine.runtime import Runtime, make_runtime
from skipseg.inference.aggregate import proposal_probs
from skipseg.inference.crf import CRFParams, dense_crf
from skipseg.inference.proposals import proposals
from skipseg.models import build_model


def timed(fn: Callable[[], Any], device: torch.device = torch.device("cpu")) -> tuple[float, Any]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, out


def scenes(count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` generated RGB scenes of 375×500 (uint8 (H, W, 3))."""
    return [np.ascontiguousarray(render_shapes_image(seed, i, 500)[0][:375]) for i in range(count)]


def proposal_inference(runtime: Runtime, width: float, k: int, images: int, batch_size: int = 16,
                       seed: int = 0) -> dict[str, Any]:
    """Seconds per image of proposals, batched and one-at-a-time proposal-wise inference (K = `k`)."""
    torch.manual_seed(0)
    model = runtime.prepare_model(build_model("deconvnet", width=width, num_classes=21).eval())
    pictures = scenes(images + 1, seed)
    rows = []
    for n, rgb in enumerate(pictures):
        t_prop, boxes = timed(lambda: proposals(rgb, k=k))
        tensor = normalize(torch.from_numpy(rgb.copy()).permute(2, 0, 1))
        if n == 0:  # warm-up: kernel selection for both batch shapes
            proposal_probs(model, tensor, boxes, runtime, "max", batch_size)
            proposal_probs(model, tensor, boxes[:2], runtime, "max", 1)
            continue
        t_batch, _ = timed(lambda: proposal_probs(model, tensor, boxes, runtime, "max", batch_size), runtime.device)
        t_single, _ = timed(lambda: proposal_probs(model, tensor, boxes, runtime, "max", 1), runtime.device)
        rows.append({"boxes": len(boxes), "proposals_s": t_prop, "batched_s": t_batch, "one_at_a_time_s": t_single})
        print(f"  image {n}: " + ", ".join(f"{key} {value:.3g}" for key, value in rows[-1].items()), flush=True)
    median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    return {"k": k, "batch_size": batch_size, "width": width, "boxes": median["boxes"],
            "params": sum(p.numel() for p in model.parameters()),
            "runtime": {"device": str(runtime.device), "amp": str(runtime.amp_dtype),
                        "channels_last": runtime.channels_last},
            "proposals_s": median["proposals_s"], "batched_s": median["batched_s"],
            "one_at_a_time_s": median["one_at_a_time_s"], "speedup": median["one_at_a_time_s"] / median["batched_s"],
            "per_image": rows}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--images", type=int, default=2, help="timed images (after one warm-up image)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("bench/results/proposals.json"))
    args = parser.parse_args()
    runtime = make_runtime(args.device, "auto", None)
    result = {"proposal_inference": proposal_inference(runtime, args.width, args.k, args.images, args.batch_size,
                                                       args.seed),
              "crf": crf_seconds(args.images)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: {k: v for k, v in value.items() if k != "per_image"} for key, value in result.items()},
                     indent=2))


if __name__ == "__main__":
    main()
