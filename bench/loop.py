"""The training loop against its bare step, for every model the demo trains, at the demo's sizes.

Bare step: `Trainer._train_step` (forward, backward, optimiser step) on batches fetched beforehand,
so that nothing but the step is timed. Loop: `Trainer.run()` for the same model and data, with no
validation or checkpoint inside it, i.e. everything the loop adds to the step (data loading and
augmentation, host syncs, logging, the progress bar).

The two are interleaved in one run, because this machine's speed drifts by tens of percent over
seconds and two separate measurements would compare two speeds: a step callback times the loop's
steps in windows of `window` steps and, after each window, `bare_repeats` bare steps on the
prefetched batches (their time is left out of the loop's). Each window gives one ratio, bare
seconds per step over loop seconds per step, both medians of that window's steps; the figure is
the median of the windows' ratios (the first window, with the one-time start-up, left out), i.e.
what the loop keeps of the step's speed (target: >= 0.85). The first decode of every image into
the cache is part of the loop's first epoch, as in a real run. The loop's wait for each batch
(decode, augmentation, collation: `next()` on its loader) is timed too, so the figure says how much
of the gap is the data path.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import torch

from bench.common import Context, add_target, figure, sync
from skipseg.config import Config, load_config, read_yaml
from skipseg.demo import CONFIGS, FULL, SKIP_CONFIG
from skipseg.engine import stages
from skipseg.engine.sweep import load_sweep_config
from skipseg.engine.trainer import Trainer

LOOP_TARGET = 0.85


def demo_cases(root: str) -> dict[str, tuple[str, list[str]]]:
    """name → (config, overrides): what `skipseg demo` trains, on the benchmark's dataset."""
    size = FULL.size
    common = [f"data.root={root}", f"model.num_classes={FULL.classes + 1}", "model.pretrained=null"]
    fcn = [*common, f"data.crop_size={size}"]
    skip = [*common, "model.tap=none"]
    return {
        "fcn32s": ("fcn32s_shapes.yaml", fcn),
        "fcn8s": ("fcn8s_shapes.yaml", fcn),
        "deconvnet": ("deconvnet_shapes.yaml", common),  # its first stage: instance crops
        "skipnet": (SKIP_CONFIG, skip),
    }


def trained_config(path, overrides: list[str], scratch):
    """The config, a staged config's first stage (its proposals cached under `scratch`), or a sweep's
    base run."""
    if stages.has_stages(path):
        return stages.stage_configs(stages.load_staged_config(path, overrides), scratch / "loop_stages")[0][1]
    if "sweep" in read_yaml(path):  # the skip study: one of its runs (here: the no-skip one)
        sweep = load_sweep_config(path, overrides)
        return Config(model=sweep.model, data=sweep.data, train=sweep.train, crf=sweep.crf)
    return load_config(path, overrides)


class Interleaved:
    """A `Trainer` step callback: times every loop step, and after each `window` of them
    `bare_repeats` bare steps on `batches`; `ratios()` is each window's bare / loop median time."""

    def __init__(self, batches: list, window: int, bare_repeats: int) -> None:
        self.batches, self.window, self.bare_repeats = batches, window, bare_repeats
        self.loop_s: list[float] = []
        self.windows: list[tuple[float, float]] = []  # (median loop s/step, median bare s/step)
        self.last = time.perf_counter()

    def __call__(self, trainer: Trainer, step: int, loss: float) -> None:
        sync(trainer.runtime.device)
        self.loop_s.append(time.perf_counter() - self.last)
        if len(self.loop_s) % self.window == 0:
            bare = []
            for _ in range(self.bare_repeats):
                start = time.perf_counter()
                trainer._train_step(self.batches)
                sync(trainer.runtime.device)
                bare.append(time.perf_counter() - start)
            self.windows.append((statistics.median(self.loop_s[-self.window:]), statistics.median(bare)))
        self.last = time.perf_counter()

    def ratios(self) -> list[float]:
        return [bare / loop for loop, bare in self.windows[1:]]


class TimedBatches:
    """Wraps the trainer's batch iterator: `seconds` holds how long each `next()` took."""

    def __init__(self, batches) -> None:
        self.batches, self.seconds = batches, []

    def __iter__(self) -> "TimedBatches":
        return self

    def __next__(self):
        start = time.perf_counter()
        batch = next(self.batches)
        self.seconds.append(time.perf_counter() - start)
        return batch


def interleaved_rates(config, run_dir, iterations: int, window: int, bare_repeats: int) -> dict[str, Any]:
    train = dataclasses.replace(config.train, iterations=iterations, val_every=10**9, checkpoint_every=10**9,
                                lr_schedule="constant")
    config = dataclasses.replace(config, train=train)
    probe = Trainer(config, run_dir / "prefetch", progress=False)
    loader = probe._batches()
    batches = [next(loader) for _ in range(train.accumulate)]
    timer = Interleaved(batches, window, bare_repeats)
    trainer = Trainer(config, run_dir / "loop", progress=True, callbacks=(timer,))
    trainer.save = lambda name="last.pt": None  # the final checkpoint is not the loop's cost
    trainer.validate = lambda: {"mean_iou": 0.0}  # nor the final validation
    timed: list[TimedBatches] = []
    make_batches = trainer._batches

    def timed_batches() -> TimedBatches:  # what run() iterates, timed
        timed.append(TimedBatches(make_batches()))
        return timed[-1]

    trainer._batches = timed_batches
    trainer.net.train()
    trainer._train_step(batches)  # warm-up, as the loop's own first steps are
    timer.last = time.perf_counter()
    trainer.run()
    images = train.batch_size * train.accumulate
    loop_s = statistics.median(loop for loop, _ in timer.windows[1:])
    bare_s = statistics.median(bare for _, bare in timer.windows[1:])
    return {"iterations": iterations, "windows": len(timer.ratios()), "window_steps": window,
            "bare_repeats": bare_repeats, "ratios": [round(r, 4) for r in timer.ratios()],
            "ratio": statistics.median(timer.ratios()), "loop_images_per_s": images / loop_s,
            "bare_images_per_s": images / bare_s, "startup_window_s_per_step": timer.windows[0][0],
            # after the first window, as the ratio; per optimiser step (all micro-batches)
            "data_ms_per_step": 1000 * train.accumulate * statistics.median(timed[0].seconds[window * train.accumulate:]),
            "bare_ms_per_step": 1000 * bare_s, "loop_ms_per_step": 1000 * loop_s}


def run(ctx: Context) -> dict:
    root = ctx.dataset(size=FULL.size, classes=FULL.classes)
    device = "cuda" if ctx.device.type == "cuda" else "cpu"
    out: dict[str, Any] = {"figures": [], "cases": {}}
    for name, (config_name, overrides) in demo_cases(str(root)).items():
        if ctx.quick and name not in ("fcn8s",):
            continue
        config = trained_config(CONFIGS / config_name, [*overrides, f"train.device={device}"], ctx.scratch)
        case = interleaved_rates(config, ctx.scratch / f"loop_{name}", ctx.pick(400, 40), window=20,
                                 bare_repeats=ctx.pick(5, 2))
        out["cases"][name] = {**case, "config": config_name, "workers": config.data.workers,
                              "batch": config.train.batch_size}
        how = (f"Trainer.run() of {config_name} ({case['iterations']} steps, workers {config.data.workers}, "
               f"batch {config.train.batch_size}) interleaved with Trainer._train_step on prefetched batches "
               f"({case['bare_repeats']} after every {case['window_steps']} loop steps): median over "
               f"{case['windows']} windows of bare / loop median s per step; loop "
               f"{case['loop_images_per_s']:.0f} images/s, bare {case['bare_images_per_s']:.0f}; per step: "
               f"loop {case['loop_ms_per_step']:.1f} ms, bare {case['bare_ms_per_step']:.1f} ms, of which the loop "
               f"waits {case['data_ms_per_step']:.1f} ms for its batch (median); "
               f"{torch.get_num_threads()} threads")
        fig = figure(f"loop_vs_step_{name}", case["ratio"], "x", how)
        add_target(fig, case["ratio"], LOOP_TARGET, True, f"training loop keeps >= {LOOP_TARGET:.0%} of the bare step's images/s")
        out["figures"].append(fig)
    return out
