"""The skip study's probe mode against separate runs, for the same iterations (configs/skip_inception_shapes.yaml).

Probe mode trains all 22 heads (no skip + 7 taps × n ∈ {3, 5, 7}) on one frozen backbone pass per
batch (`skipseg.engine.probe.ProbeTrainer`); separate mode trains one whole network per
configuration (`Trainer` on `run_config`, as `skipseg sweep` does). Each run here is real: built,
trained for `iterations` steps on the generated dataset, validated on `val_images` images and
checkpointed at its last step. Per run:

- wall: construction + `run()` (data loading, steps, the final validation and checkpoint);
- step: the median duration of the steps between the first (loader start-up) and the last
  (validation + checkpoint), from a step callback's timestamps;
- overhead: wall − iterations × step.

Separate-mode total = the sum over all 22 runs when all are measured (full run), otherwise the
mean of the measured runs × 22 (stated in the figure). The Table 1 projection puts the config's own
iteration count (150) into overhead + iterations × step, for probe and for the separate runs.
"""
from __future__ import annotations

import shutil
import statistics
import time
from typing import Any

import torch

from bench.common import ROOT, Context, add_target, figure
from skipseg.config import Config
from skipseg.engine.probe import ProbeTrainer
from skipseg.engine.sweep import expand, load_sweep_config, run_config
from skipseg.engine.trainer import Trainer
from skipseg.models.probe import HeadSpec
from skipseg.models.registry import resolved_options

CONFIG = ROOT / "configs" / "skip_inception_shapes.yaml"
PROBE_TARGET = 1.5


def timed_run(make_trainer, iterations: int) -> dict[str, Any]:
    """Build and run a trainer, recording when each step ends."""
    ends: list[float] = []
    start = time.perf_counter()
    trainer = make_trainer(lambda tr, step, loss: ends.append(time.perf_counter()))
    built = time.perf_counter()
    trainer.run()
    wall = time.perf_counter() - start
    durations = [b - a for a, b in zip([built, *ends[:-1]], ends)]
    steady = durations[1:-1] or durations  # without loader start-up and the final validation/checkpoint
    step = statistics.median(steady)
    return {"wall_s": wall, "build_s": built - start, "step_s": step, "step_durations_s": durations,
            "overhead_s": wall - iterations * step, "iterations": len(ends)}


def run(ctx: Context) -> dict:
    iterations, val_images = ctx.pick(5, 3), ctx.pick(8, 4)
    device = "cuda" if ctx.device.type == "cuda" else "cpu"
    overrides = [f"data.root={ctx.dataset()}", f"train.device={device}", f"train.iterations={iterations}",
                 f"train.val_every={iterations}", f"train.checkpoint_every={iterations}",
                 f"train.log_every={iterations}", f"train.max_val_images={val_images}"]
    if ctx.quick:
        overrides.append("train.batch_size=2")
    config = load_sweep_config(CONFIG, overrides)
    table_iterations = load_sweep_config(CONFIG).train.iterations
    plan = expand(config)
    chosen = plan if not ctx.quick else [r for r in plan if r.name in ("noskip", "tap1_k7")]
    out = ctx.scratch / "study"

    heads = [HeadSpec(r.name, r.tap, r.kernel) for r in plan]
    print(f"  probe: {len(heads)} heads, {iterations} iterations ...", flush=True)
    base = Config(model=config.model, data=config.data, train=config.train)  # as `run_probe` passes it
    probe = timed_run(lambda cb: ProbeTrainer(base, out / "probe", heads, progress=False, callbacks=(cb,)),
                      iterations)
    shutil.rmtree(out / "probe", ignore_errors=True)
    separate: dict[str, dict] = {}
    for planned in chosen:
        print(f"  separate: {planned.name} ...", flush=True)
        separate[planned.name] = timed_run(
            lambda cb: Trainer(run_config(config, planned), out / planned.name, progress=False, callbacks=(cb,)),
            iterations)
        shutil.rmtree(out / planned.name, ignore_errors=True)

    measured_all = len(separate) == len(plan)
    walls = [r["wall_s"] for r in separate.values()]
    separate_total = sum(walls) if measured_all else statistics.mean(walls) * len(plan)
    how_separate = ("sum over all 22 runs" if measured_all else
                    f"mean of the {len(separate)} measured runs ({', '.join(separate)}) x {len(plan)} (extrapolated)")
    mean_single = statistics.mean(walls)
    noskip = separate.get("noskip")

    def projected(r: dict) -> float:  # overhead clamped at 0: a noisy step estimate can exceed wall / iterations
        return max(r["overhead_s"], 0.0) + table_iterations * r["step_s"]

    probe_table = projected(probe)
    single_table = statistics.mean(projected(r) for r in separate.values())
    separate_table = (sum(projected(r) for r in separate.values()) if measured_all else single_table * len(plan))
    size = resolved_options(config.model)["input_size"]
    common = (f"{CONFIG.name} (inception_v3 at {size}², batch {config.train.batch_size}, "
              f"{iterations} iterations, final validation on "
              f"{val_images} images and a checkpoint), {torch.get_num_threads()} threads")
    figures = [
        figure("probe.wall_s", probe["wall_s"], "s", f"probe mode, all {len(heads)} heads: build + run; {common}",
               step_s=probe["step_s"]),
        figure("probe.separate_wall_s", separate_total, "s", f"separate runs, {how_separate}; {common}"),
        figure("probe.speedup_vs_separate", separate_total / probe["wall_s"], "x",
               "separate-runs wall / probe wall, same iterations"),
        figure("probe.over_single_run", probe["wall_s"] / mean_single, "x",
               f"probe wall / one separate run's wall (mean over {len(separate)} measured), same iterations",
               over_noskip=probe["wall_s"] / noskip["wall_s"] if noskip else None),
        figure("probe.step_over_single_step", probe["step_s"] / statistics.mean(r["step_s"] for r in separate.values()),
               "x", "probe steady step time / one separate run's steady step time (mean over measured runs)"),
    ]
    fig = figure("probe.table1_over_single_run", probe_table / single_table, "x",
                 f"projected to the config's {table_iterations} iterations (overhead + iterations x step): "
                 f"probe {probe_table:.0f} s vs one single run {single_table:.0f} s (mean); separate Table 1 "
                 f"{separate_table:.0f} s", probe_table_s=probe_table, single_table_s=single_table,
                 separate_table_s=separate_table)
    add_target(fig, fig["value"], PROBE_TARGET, False,
               f"probe mode (whole Table 1) <= {PROBE_TARGET:g}x the cost of a single run")
    figures.append(fig)
    return {"figures": figures, "details": {"probe": probe, "separate": separate, "measured_all": measured_all,
                                            "plan": [r.name for r in plan], "table_iterations": table_iterations}}
