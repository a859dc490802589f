"""Cost of DeconvNet-style inference on this machine: proposal generation, proposal-wise prediction
(crops batched vs one crop per forward) and the dense CRF, per 500×375 image.

    python bench/bench_proposals.py --width 0.125 --k 50 --images 3 --json bench/results/proposals.json

Images are generated scenes (`skipseg.data.shapes`, rendered at 500×500 and cut to 500×375, the
usual VOC size). Times are medians over the images after one warm-up image; the model is a
DeconvNet at `--width` (random weights: the cost does not depend on them) with 21 classes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from skipseg.data.shapes import render_shapes_image
from skipseg.data.transforms import normalize
from skipseg.engine.runtime import Runtime
from skipseg.inference.aggregate import proposal_probs
from skipseg.inference.crf import CRFParams, dense_crf
from skipseg.inference.proposals import proposals
from skipseg.models import build_model


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench(width: float, k: int, images: int, batch_size: int, channels_last: bool, seed: int) -> dict:
    load_before = os.getloadavg()[0]  # other processes on the cores inflate every figure
    torch.manual_seed(0)
    runtime = Runtime(torch.device("cpu"), None, channels_last)
    model = runtime.prepare_model(build_model("deconvnet", width=width, num_classes=21).eval())
    pictures = [np.ascontiguousarray(render_shapes_image(seed, i, 500)[0][:375]) for i in range(images + 1)]
    rows = []
    for n, rgb in enumerate(pictures):
        t_prop, boxes = timed(lambda: proposals(rgb, k=k))
        tensor = normalize(torch.from_numpy(rgb.copy()).permute(2, 0, 1))
        t_batch, probs = timed(lambda: proposal_probs(model, tensor, boxes, runtime, "max", batch_size))
        t_single, _ = timed(lambda: proposal_probs(model, tensor, boxes, runtime, "max", 1))
        t_crf, _ = timed(lambda: dense_crf(probs.numpy(), rgb, CRFParams()))
        row = {"boxes": len(boxes), "proposals_s": t_prop, "batched_s": t_batch, "one_at_a_time_s": t_single,
               "crf_s": t_crf}
        print(f"image {n}{' (warm-up)' if n == 0 else ''}: " + ", ".join(
            f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}" for key, value in row.items()))
        if n > 0:
            rows.append(row)
    median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    with torch.device("meta"):
        params = sum(p.numel() for p in build_model("deconvnet", width=width).parameters())
    return {
        "what": "seconds per 500x375 image (median over images, after one warm-up image)",
        "image_size": [375, 500], "images": images, "k": k, "batch_size": batch_size,
        "model": {"name": "deconvnet", "width": width, "num_classes": 21, "params": params,
                  "input_size": [224, 224]},
        "runtime": {"device": "cpu", "precision": "fp32", "channels_last": channels_last,
                    "torch_threads": torch.get_num_threads()},
        "proposals": {"method": "selective search fast (OpenCV), longer side 200 px, top-k, deduped",
                      "seconds": median["proposals_s"], "boxes": median["boxes"]},
        "proposal_inference": {"batched_seconds": median["batched_s"],
                               "one_at_a_time_seconds": median["one_at_a_time_s"],
                               "speedup": median["one_at_a_time_s"] / median["batched_s"],
                               "per_crop_batched_seconds": median["batched_s"] / median["boxes"]},
        "crf": {"classes": 21, "iterations": CRFParams().iterations, "seconds": median["crf_s"]},
        "per_image": rows,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                    "cpus": os.cpu_count(), "load_average_1min": [load_before, os.getloadavg()[0]]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.125)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--images", type=int, default=3, help="timed images (plus one warm-up)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("bench/results/proposals.json"))
    args = parser.parse_args()
    result = bench(args.width, args.k, args.images, args.batch_size, not args.no_channels_last, args.seed)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("proposals", "proposal_inference", "crf")}, indent=2))


if __name__ == "__main__":
    main()
