"""The training loop against its bare step, for every model the demo trains, at the demo's sizes.

Bare step: `Trainer._train_step` (forward, backward, optimiser step) on batches fetched beforehand,
so that nothing but the step is timed (median of repeats). Loop: `Trainer.run()` for the same model
and data over `iterations` steps with no validation or checkpoint inside them, i.e. everything the
loop adds to the step (data loading and augmentation, host syncs, logging, the progress bar). Its
rate is the median of the images/s the trainer logs per window of `log_every` steps (the first
window, with the one-time start-up, left out), as the bare step's is a median; what start-up costs
once (building, the first decode of every image into the cache) is reported on its own as the
wall time beyond iterations / that rate. Loop images/s over bare-step images/s is what the loop
keeps of the step's speed (target: >= 0.85).
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import torch

from bench.common import Context, add_target, figure, stats, time_calls
from skipseg.config import Config, load_config, read_yaml
from skipseg.demo import CONFIGS, FULL, SKIP_CONFIG
from skipseg.engine import stages
from skipseg.engine.logbook import read_metrics
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


def _config(path, overrides: list[str], scratch):
    """The config, a staged config's first stage (its proposals cached under `scratch`), or a sweep's
    base run."""
    if stages.has_stages(path):
        return stages.stage_configs(stages.load_staged_config(path, overrides), scratch / "loop_stages")[0][1]
    if "sweep" in read_yaml(path):  # the skip study: one of its runs (here: the no-skip one)
        sweep = load_sweep_config(path, overrides)
        return Config(model=sweep.model, data=sweep.data, train=sweep.train, crf=sweep.crf)
    return load_config(path, overrides)


def bare_rate(trainer: Trainer, repeats: tuple[int, int, float]) -> dict[str, Any]:
    trainer.net.train()
    loader = trainer._batches()
    batches = [next(loader) for _ in range(trainer.config.train.accumulate)]
    trainer._train_step(batches)  # warm-up
    timing = stats(time_calls(lambda: trainer._train_step(batches), trainer.runtime.device, *repeats))
    images = sum(b[0].shape[0] for b in batches)
    return {**timing, "images_per_s": images / timing["median_s"]}


def loop_rate(config, run_dir, iterations: int) -> dict[str, Any]:
    train = dataclasses.replace(config.train, iterations=iterations, val_every=10**9, checkpoint_every=10**9,
                                lr_schedule="constant")
    trainer = Trainer(dataclasses.replace(config, train=train), run_dir, progress=True)
    trainer.save = lambda name="last.pt": None  # the final checkpoint is not the loop's cost
    trainer.validate = lambda: {"mean_iou": 0.0}  # nor the final validation
    start = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - start
    windows = [row["images_per_s"] for row in read_metrics(run_dir) if row["split"] == "train"][1:]
    images = iterations * train.batch_size * train.accumulate
    rate = statistics.median(windows) if windows else images / seconds
    return {"iterations": iterations, "seconds": seconds, "images_per_s": rate, "windows": len(windows),
            "wall_images_per_s": images / seconds, "startup_s": max(0.0, seconds - images / rate)}


def run(ctx: Context) -> dict:
    root = ctx.dataset(size=FULL.size, classes=FULL.classes)
    device = "cuda" if ctx.device.type == "cuda" else "cpu"
    out: dict[str, Any] = {"figures": [], "cases": {}}
    for name, (config_name, overrides) in demo_cases(str(root)).items():
        if ctx.quick and name not in ("fcn8s",):
            continue
        config = _config(CONFIGS / config_name, [*overrides, f"train.device={device}"], ctx.scratch)
        bare = bare_rate(Trainer(config, ctx.scratch / f"loop_bare_{name}", progress=False),
                         ctx.pick((5, 20, 10.0), (2, 3, 1.0)))
        loop = loop_rate(config, ctx.scratch / f"loop_run_{name}", ctx.pick(200, 20))
        ratio = loop["images_per_s"] / bare["images_per_s"]
        out["cases"][name] = {"bare": bare, "loop": loop, "ratio": ratio, "config": config_name,
                              "workers": config.data.workers, "batch": config.train.batch_size}
        how = (f"Trainer.run() of {config_name} ({loop['iterations']} steps, workers {config.data.workers}, "
               f"batch {config.train.batch_size}; median of its logged windows, start-up "
               f"{loop['startup_s']:.1f} s once) over Trainer._train_step on prefetched batches, "
               f"{torch.get_num_threads()} threads")
        fig = figure(f"loop_vs_step_{name}", ratio, "x", how)
        add_target(fig, ratio, LOOP_TARGET, True, f"training loop keeps >= {LOOP_TARGET:.0%} of the bare step's images/s")
        out["figures"].append(fig)
    return out
