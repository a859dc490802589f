"""Training step and inference of the papers' models: time, images/s, counted FLOPs, achieved FLOP/s.

Each model runs on two paths: *fp32 NCHW* (the plain baseline) and the *default fast path*, i.e.
what `make_runtime(device, "auto", None)` picks (bf16 autocast + channels_last on CUDA and on CPUs
with native bf16; fp32 NCHW on other CPUs, where the two paths are the same and measured once).
A training step = forward, cross-entropy, backward, the trainer's SGD step (fused, momentum 0.9);
inference = forward under `torch.inference_mode`. FLOPs are counted by
`torch.utils.flop_counter.FlopCounterMode` during the (untimed) warm-up call: convolutions and matrix products, forward + backward for training
(optimiser not counted), forward for inference. Achieved FLOP/s = counted FLOPs / median time.
"""
from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench.common import Context, add_target, figure, stats, time_calls
from skipseg.config import TrainConfig
from skipseg.data.palette import IGNORE_INDEX
from skipseg.engine.evaluator import grid_targets
from skipseg.engine.optim import build_optimizer
from skipseg.core.runtime import Runtime, make_runtime
from skipseg.models import build_model

TRAIN_TARGET, INFER_TARGET = 0.5, 0.6  # FCN-8s: fractions of the matmul peak


@dataclass(frozen=True)
class Case:
    """One model configuration: a key for the figures, the registry name and options, input size, batch."""

    key: str
    model: str
    size: int
    batch: int
    options: dict[str, Any] = field(default_factory=dict)
    targets: bool = False  # the FCN-8s FLOP/s targets apply


def random_target(model: torch.nn.Module, batch: int, size: int, num_classes: int,
                  device: torch.device) -> torch.Tensor:
    """Random labels `[batch, size, size]`, or their `[batch, G, G]` cells for a box-wise model."""
    target = torch.randint(0, num_classes, (batch, size, size), device=device)
    to_cells = grid_targets(model)
    return to_cells(target) if to_cells is not None else target


def training_step(model: torch.nn.Module, runtime: Runtime, images: torch.Tensor, target: torch.Tensor,
                  optimizer: str, reduction: str = "mean") -> Callable[[], None]:
    """One training step as the trainer takes it: forward under the runtime's autocast, cross-entropy,
    backward, the trainer's (fused) `optimizer` step; `images` already in the runtime's layout."""
    step_optimizer = build_optimizer(model, TrainConfig(optimizer=optimizer, lr=1e-9))

    def step() -> None:
        with runtime.autocast():
            logits = model(images)  # [N, C, H, W] (or [N, C, G, G])
        F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction=reduction).backward()
        step_optimizer.step()
        step_optimizer.zero_grad(set_to_none=True)

    return step


def cases(ctx: Context) -> list[Case]:
    """The issue's configurations; `--quick` shrinks width, size and batch to check the code only."""
    skip = dict(backbone="inception_v3", tap="6", kernel=3, mode="box")
    if not ctx.quick:
        return [Case("fcn8s_w1_256_b1", "fcn8s", 256, 1, dict(width=1.0), True),
                Case("fcn8s_w1_256_b8", "fcn8s", 256, 8, dict(width=1.0), True),
                Case("deconvnet_224_b8", "deconvnet", 224, 8, dict(width=1.0)),
                Case("skipnet_inception_559_b1", "skipnet", 559, 1,
                     dict(skip, head_channels=256, grid=67, input_size=559))]
    return [Case("fcn8s_w0.25_128_b1", "fcn8s", 128, 1, dict(width=0.25), True),
            Case("fcn8s_w0.25_128_b2", "fcn8s", 128, 2, dict(width=0.25), True),
            Case("deconvnet_w0.125_224_b2", "deconvnet", 224, 2, dict(width=0.125)),
            Case("skipnet_inception_143_b1", "skipnet", 143, 1, dict(skip, head_channels=64, grid=15, input_size=143))]


def paths(device: torch.device) -> dict[str, Runtime]:
    return {"fp32_nchw": Runtime(device, None, False), "fast": make_runtime(device.type, "auto", None)}


def describe(runtime: Runtime) -> str:
    precision = str(runtime.amp_dtype).replace("torch.", "") + " autocast" if runtime.amp_dtype else "fp32"
    return f"{precision}, {'channels_last' if runtime.channels_last else 'NCHW'}"


def measure(case: Case, runtime: Runtime, repeats: tuple[int, int, float]) -> dict[str, Any]:
    """Train and inference timings and counted FLOPs of one case on one runtime."""
    device = runtime.device
    torch.manual_seed(0)
    model = runtime.prepare_model(build_model(case.model, num_classes=21, **case.options))
    params = sum(p.numel() for p in model.parameters())
    images = runtime.to_input(torch.randn(case.batch, 3, case.size, case.size))
    target = random_target(model, case.batch, case.size, 21, device)
    train_step = training_step(model, runtime, images, target, "sgd")  # the trainer's (fused) SGD

    def infer_step() -> None:
        with torch.inference_mode(), runtime.autocast():
            model(images)

    out: dict[str, Any] = {"params": params, "precision": describe(runtime)}
    for name, step, mode in (("train", train_step, model.train), ("infer", infer_step, model.eval)):
        mode()
        with FlopCounterMode(display=False) as counter:
            step()  # warm-up (oneDNN/cuDNN primitive creation), FLOPs counted on the way
        flops = float(counter.get_total_flops())
        cpu: list[float] = []
        timing = stats(time_calls(step, device, *repeats, cpu_times=cpu), cpu)
        out[name] = {**timing, "flops": flops, "images_per_s": case.batch / timing["median_s"],
                     "flop_per_s": flops / timing["median_s"]}
    return out


def _peak_key(runtime: Runtime) -> str:
    return "bf16" if runtime.amp_dtype in (torch.bfloat16, torch.float16) else "fp32"


def run(ctx: Context) -> dict:
    """Figures per case and path (s/step, images/s, FLOP/s and its ratio to the peaks); FCN-8s targets."""
    repeats = ctx.pick((2, 5, 30.0), (1, 2, 2.0))
    runtimes = paths(ctx.device)
    same = runtimes["fast"].amp_dtype == runtimes["fp32_nchw"].amp_dtype and \
        runtimes["fast"].channels_last == runtimes["fp32_nchw"].channels_last
    figures: list[dict] = []
    rows: list[list[str]] = []
    results: dict[str, Any] = {}
    for case in cases(ctx):
        results[case.key] = {}
        for path, runtime in runtimes.items():
            if path == "fast" and same:
                result = {**results[case.key]["fp32_nchw"], "same_as": "fp32_nchw"}
            else:
                print(f"  {case.key} {path} ({describe(runtime)}) ...", flush=True)
                result = measure(case, runtime, repeats)
                gc.collect()  # the case's model, optimiser state and activations, before the next one
                if ctx.device.type == "cuda":
                    torch.cuda.empty_cache()
            results[case.key][path] = result
            peak_key = _peak_key(runtime)
            how = (f"{case.model} {case.options}, {case.size}x{case.size}, batch {case.batch}, {describe(runtime)}"
                   f"{' (= fp32_nchw here: auto picks fp32 on this device)' if result.get('same_as') else ''}; "
                   f"{torch.get_num_threads()} threads")
            for phase, threshold in (("train", TRAIN_TARGET), ("infer", INFER_TARGET)):
                r = result[phase]
                ratios = {f"ratio_to_{k}_peak": r["flop_per_s"] / v for k, v in ctx.peaks.items()}
                base = f"{case.key}.{path}.{phase}"
                how_phase = f"{how}; median of {r['repeats']} timed calls after a warm-up"
                figures.append(figure(f"{base}.step_s", r["median_s"], "s", how_phase, best_s=r["best_s"]))
                figures.append(figure(f"{base}.images_per_s", r["images_per_s"], "images/s", how_phase))
                fig = figure(f"{base}.flop_per_s", r["flop_per_s"], "FLOP/s",
                             f"{r['flops']:.4g} counted FLOPs per {'step' if phase == 'train' else 'batch'} "
                             f"/ median time; {how_phase}", flops=r["flops"], **ratios)
                if case.targets and path == "fast" and peak_key in ctx.peaks:
                    add_target(fig, fig[f"ratio_to_{peak_key}_peak"], threshold, True,
                               f"FCN-8s {phase} achieved FLOP/s >= {threshold:.0%} of the {peak_key} matmul peak "
                               f"(the precision the default path computes in; ratio to the bf16 peak: "
                               f"{ratios.get('ratio_to_bf16_peak', float('nan')):.3g})")
                figures.append(fig)
                rows.append([case.key, path, describe(runtime), phase, f"{r['median_s']:.3g}",
                             f"{r['images_per_s']:.3g}",
                             f"{r['flops'] / 1e9:.4g}", f"{r['flop_per_s'] / 1e9:.3g}",
                             *(f"{ratios.get(f'ratio_to_{k}_peak', float('nan')):.1%}" for k in ("fp32", "bf16")),
                             f"{r.get('cpu_over_wall', float('nan')):.2f}"])
    table = {"columns": ["case", "path", "precision", "phase", "s/step", "images/s", "GFLOP/step", "GFLOP/s",
                         "% fp32 peak", "% bf16 peak", "CPU s / wall s"], "rows": rows}
    note = ("fast = fp32_nchw on this device: make_runtime('auto') picks fp32 NCHW (no native bf16); "
            "measured once") if same else None
    return {"figures": figures, "table": table, "details": results, "fast_path": describe(runtimes["fast"]),
            "note": note}
