"""The demo's training steps, eager reference against the runtime's step, timed side by side.

For each model the demo trains, as its config trains it (`fcn8s_shapes.yaml`: width 1/8, 64-px crops,
batch 8; `deconvnet_shapes.yaml`: 32-px crops, batch 32; the skip study's Inception-v3 at width 1/4
on 139-px images and the VGG16-BN skip net, batch 8; Adam, fp32 as the demo runs them), two copies
with the same weights take the same training step (forward, summed cross-entropy, backward, the
trainer's fused Adam) on the same batch:

- `eager`: the model as its file builds it, fp32, NCHW, nothing substituted;
- `runtime`: what `Trainer` runs, `Runtime.prepare_model` at fp32 (the fully connected layers as
  matmuls on their live taps) in the memory format the config asks for (`train.channels_last`).

Their steps alternate in rounds (a few of one, then a few of the other), so both see the same machine
speed; the figure per path is the median over all its timed steps. FLOPs are counted once, on the
eager step, by `torch.utils.flop_counter.FlopCounterMode` (forward + backward, the optimiser not
counted): the nominal work of the model, so a substitution that skips multiplications by zero
padding shows as more FLOP/s. Fraction of peak = counted FLOPs / median step time / fp32 peak.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import Context, add_target, figure, sync
from bench.training import random_target, training_step
from skipseg.core.runtime import Runtime, make_runtime
from skipseg.models import build_model

PEAK_TARGET = 0.40  # runtime step: fraction of the fp32 matmul peak


@dataclass(frozen=True)
class DemoCase:
    key: str
    config: str  # the demo's config of the model (its first stage for a staged one, no skip for the study)
    model: str
    size: int
    batch: int
    channels_last: bool | None
    options: dict[str, Any] = field(default_factory=dict)


def cases(ctx: Context) -> list[DemoCase]:
    """The demo's models as their configs train them (model options, crop size, batch, memory format)."""
    from bench.loop import trained_config
    from skipseg.demo import CONFIGS, FULL, SKIP_CONFIG
    from skipseg.inference.predictor import model_options

    names = ["fcn8s_shapes.yaml", "deconvnet_shapes.yaml", SKIP_CONFIG, "skip_vgg_shapes.yaml"]
    found = []
    for name in names[:1] if ctx.quick else names:
        overrides = [f"model.num_classes={FULL.classes + 1}", *(["model.tap=none"] if "skip" in name else [])]
        config = trained_config(CONFIGS / name, overrides, ctx.scratch)
        options = model_options(config)
        size = config.data.crop_size or options.get("input_size") or FULL.size
        found.append(DemoCase(name.removesuffix(".yaml"), name, config.model.name, size, config.train.batch_size,
                              config.train.channels_last, options))
    return found


def measure(case: DemoCase, device: torch.device, rounds: int, per_round: int) -> dict[str, Any]:
    torch.manual_seed(0)
    images = torch.randn(case.batch, 3, case.size, case.size)
    eager = build_model(case.model, **case.options).to(device).train()
    runtime = make_runtime(device.type, "fp32", case.channels_last)
    fast = build_model(case.model, **case.options)
    fast.load_state_dict(eager.state_dict())
    fast = runtime.prepare_model(fast).train()
    target = random_target(eager, case.batch, case.size, case.options["num_classes"], device)
    plain = Runtime(device, None, False)
    steps = {"eager": training_step(eager, plain, plain.to_input(images), target, "adam", "sum"),
             "runtime": training_step(fast, runtime, runtime.to_input(images), target, "adam", "sum")}
    with FlopCounterMode(display=False) as counter:
        steps["eager"]()  # warm-up, FLOPs counted on the way
    steps["runtime"]()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            for _ in range(per_round):
                sync(device)
                start = time.perf_counter()
                step()
                sync(device)
                times[name].append(time.perf_counter() - start)
    return {"flops": float(counter.get_total_flops()), "channels_last": runtime.channels_last,
            **{f"{name}_s": statistics.median(t) for name, t in times.items()}, "times_s": times}


def run(ctx: Context) -> dict:
    rounds, per_round = ctx.pick((8, 5), (2, 2))
    peak = ctx.peaks["fp32"]
    figures, rows, details = [], [], {}
    for case in cases(ctx):
        print(f"  {case.key} ...", flush=True)
        r = measure(case, ctx.device, rounds, per_round)
        details[case.key] = r
        how = (f"{case.config}: {case.model}, {case.size}x{case.size}, batch {case.batch}, fp32; eager (plain "
               f"model, NCHW) and runtime (prepare_model: fc layers as matmuls, "
               f"{'channels_last' if r['channels_last'] else 'NCHW'}) alternating, {rounds} rounds of {per_round} "
               f"steps each; medians; {r['flops'] / 1e9:.3g} GFLOP per step counted on the eager step; "
               f"{torch.get_num_threads()} threads")
        ratio = r["eager_s"] / r["runtime_s"]
        fractions = {p: r["flops"] / r[f"{p}_s"] / peak for p in ("eager", "runtime")}
        figures.append(figure(f"demo_step.{case.key}.eager_ms", 1000 * r["eager_s"], "ms", how))
        figures.append(figure(f"demo_step.{case.key}.runtime_ms", 1000 * r["runtime_s"], "ms", how))
        figures.append(figure(f"demo_step.{case.key}.speedup", ratio, "x", how))
        fig = figure(f"demo_step.{case.key}.runtime_fraction_of_fp32_peak", fractions["runtime"], "", how,
                     eager_fraction=fractions["eager"])
        add_target(fig, fractions["runtime"], PEAK_TARGET, True,
                   f"{case.key}: the runtime's training step >= {PEAK_TARGET:.0%} of the fp32 matmul peak")
        figures.append(fig)
        rows.append([case.key, f"{r['flops'] / 1e9:.3g}", f"{1000 * r['eager_s']:.1f}", f"{1000 * r['runtime_s']:.1f}",
                     f"{ratio:.2f}", f"{fractions['eager']:.1%}", f"{fractions['runtime']:.1%}"])
    table = {"columns": ["model", "GFLOP/step", "eager ms", "runtime ms", "speedup", "eager % fp32 peak",
                         "runtime % fp32 peak"], "rows": rows}
    return {"figures": figures, "table": table, "details": details}
