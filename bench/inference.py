"""The inference-side parts of `bench.run`: proposal-wise inference, dense CRF, confusion-matrix updates."""
from __future__ import annotations

import torch

from bench.confusion_impls import update_rate
from bench.proposals import crf_seconds, proposal_inference
from bench.common import Context, add_target, figure
from skipseg.core.runtime import make_runtime
from skipseg.inference.pipeline import default_proposal_batch

PROPOSAL_TARGET = 3.0  # batched crops ≥ 3× faster than one at a time
CONFUSION_TARGET = 2e8  # pixels/s


def run_proposals(ctx: Context) -> dict:
    """Seconds per 500×375 image at K = 50 for 1, 2, 4, 8 and 16 crops per forward; the target compares
    the evaluator's default batch on this device (16 on a GPU, 2 on a CPU) with one crop at a time."""
    runtime = make_runtime(ctx.device.type, "auto", None)
    width = ctx.pick(0.25 if ctx.device.type == "cpu" else 1.0, 0.0625)
    default = default_proposal_batch(runtime.device)
    batches = sorted({1, 2, 4, 8, 16, default}) if not ctx.quick else sorted({1, default, 16})
    result = proposal_inference(runtime, width=width, k=50, images=ctx.pick(2, 1), batch_sizes=batches)
    how = (f"DeconvNet width {width} ({result['params'] / 1e6:.1f} M params; width 1 = the paper's 252 M, too slow "
           f"for a CPU run) at 224², {result['boxes']} selective-search boxes, max aggregation, "
           f"{runtime.device} {'bf16' if runtime.amp_dtype else 'fp32'}"
           f"{' channels_last' if runtime.channels_last else ''}, "
           f"median over {len(result['per_image'])} generated 500x375 images after a warm-up, "
           f"{torch.get_num_threads()} threads")
    seconds = result["seconds_by_batch"]
    figures = [figure(f"proposals.batch_{b}_s_per_image", s, "s",
                      f"{b} crop(s) per forward{' (the default here)' if b == default else ''}; {how}")
               for b, s in seconds.items()]
    figures.append(figure("proposals.generation_s_per_image", result["proposals_s"], "s",
                          "selective search (OpenCV, fast, longer side 200 px), top 50, deduplicated"))
    speedup = seconds[1] / seconds[default]
    fig = figure("proposals.batched_speedup", speedup, "x",
                 f"one-at-a-time s / s at the default batch ({default}), same boxes; best batch "
                 f"{min(seconds, key=seconds.get)}: {seconds[1] / min(seconds.values()):.2f}x; batch 16: "
                 f"{seconds[1] / seconds[16]:.2f}x")
    add_target(fig, speedup, PROPOSAL_TARGET, True,
               f"batched proposals (default batch {default}) >= {PROPOSAL_TARGET:g}x faster than one at a time")
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
