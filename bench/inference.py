"""The inference-side parts of `bench.run`: proposal-wise inference, dense CRF, confusion-matrix updates."""
from __future__ import annotations

import torch

from bench.bench_confusion import update_rate
from bench.bench_proposals import crf_seconds, proposal_inference
from bench.common import Context, add_target, figure
from skipseg.engine.runtime import make_runtime

PROPOSAL_TARGET = 3.0  # batched crops ≥ 3× faster than one at a time
CONFUSION_TARGET = 2e8  # pixels/s


def run_proposals(ctx: Context) -> dict:
    """Seconds per 500×375 image at K = 50: crops batched (16 per forward) vs one crop per forward."""
    runtime = make_runtime(ctx.device.type, "auto", None)
    width = ctx.pick(0.25 if ctx.device.type == "cpu" else 1.0, 0.0625)
    result = proposal_inference(runtime, width=width, k=50, images=ctx.pick(2, 1), batch_size=16)
    how = (f"DeconvNet width {width} ({result['params'] / 1e6:.1f} M params; width 1 = the paper's 252 M, too slow "
           f"for a CPU run) at 224², {result['boxes']} selective-search boxes, max aggregation, "
           f"{runtime.device} {'bf16' if runtime.amp_dtype else 'fp32'}"
           f"{' channels_last' if runtime.channels_last else ''}, "
           f"median over {len(result['per_image'])} generated 500x375 images after a warm-up, "
           f"{torch.get_num_threads()} threads")
    figures = [
        figure("proposals.batched_s_per_image", result["batched_s"], "s", f"batch 16 crops per forward; {how}"),
        figure("proposals.one_at_a_time_s_per_image", result["one_at_a_time_s"], "s", f"1 crop per forward; {how}"),
        figure("proposals.generation_s_per_image", result["proposals_s"], "s",
               "selective search (OpenCV, fast, longer side 200 px), top 50, deduplicated"),
    ]
    fig = figure("proposals.batched_speedup", result["speedup"], "x", "one-at-a-time s / batched s, same boxes")
    add_target(fig, result["speedup"], PROPOSAL_TARGET, True,
               f"batched proposals >= {PROPOSAL_TARGET:g}x faster than one at a time")
    figures.append(fig)
    return {"figures": figures, "details": result}


def run_crf(ctx: Context) -> dict:
    """Seconds of the dense CRF (pydensecrf, 10 mean-field steps) per 500×375 image with 21 classes."""
    result = crf_seconds(ctx.pick(3, 1), classes=21, warmup=not ctx.quick)
    how = (f"skipseg.inference.crf.dense_crf, default parameters ({result['iterations']} iterations), 21 classes, "
           f"375x500 generated image, smooth random probabilities, median of {len(result['times_s'])} "
           f"(CPU always; pydensecrf is single-threaded)")
    return {"figures": [figure("crf.s_per_image", result["median_s"], "s", how, best_s=result["best_s"])],
            "details": result}


def run_confusion(ctx: Context) -> dict:
    """Pixels/s of `ConfusionMatrix.update` (21 classes, uint8 and int64 labels)."""
    batch, size, rounds = ctx.pick(8, 2), ctx.pick(512, 256), ctx.pick(30, 5)
    figures, details = [], {}
    for dtype in (torch.uint8, torch.int64):
        r = update_rate(21, batch, size, rounds, dtype, ctx.device)
        name = str(dtype).replace("torch.", "")
        details[name] = r
        fig = figure(f"confusion.{name}.pixels_per_s", r["pixels_per_s"], "pixels/s",
                     f"ConfusionMatrix.update, 21 classes, {batch}x{size}x{size} {name} labels (10 % void) on "
                     f"{ctx.device}, median of {rounds} calls, {r['threads']} threads",
                     pixels_per_s_best=r["pixels_per_s_best"])
        # int64 is what the evaluator passes (argmax and int64 masks); uint8 what stored label maps are
        add_target(fig, r["pixels_per_s"] / CONFUSION_TARGET, 1.0, True,
                   f"confusion matrix ({name}) >= {CONFUSION_TARGET:.0e} pixels/s (ratio = measured / 2e8)")
        figures.append(fig)
    return {"figures": figures, "details": details}
