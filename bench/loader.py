"""The training data loader against what the training step consumes, on the CPU demo config.

Loader: the trainer's own pipeline (`open_dataset` + `train_transforms` of configs/fcn8s_shapes.yaml,
`SeededView`, `ResumableBatchSampler`, `guarded_batches`) over the generated shapes dataset, with 2
workers, iterated alone (nothing training meanwhile). The first batch (worker start-up) is timed
apart; images/s is over the batches after it.

Step: the real `Trainer._train_step` of the same config (FCN-8s width 1/8, 128² crops, batch 8,
Adam) on batches fetched beforehand, so that no data loading is inside the timing; its images/s is
what training consumes. Target: loader ≥ 3× the step's consumption.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from bench.common import ROOT, Context, add_target, figure, stats, time_calls
from skipseg.config import load_config
from skipseg.data.augmentation import train_transforms
from skipseg.data.datasets import open_dataset
from skipseg.core.loading import guarded_batches
from skipseg.core.sampling import ResumableBatchSampler, SeededView
from skipseg.engine.trainer import Trainer

CONFIG = ROOT / "configs" / "fcn8s_shapes.yaml"
LOADER_TARGET = 3.0


def loader_rate(config, batches: int, workers: int) -> dict[str, Any]:
    """Images/s of the training loader over `batches` batches after the first (and the first's time)."""
    data, cfg = config.data, config.train
    scales = (data.scale_min, data.scale_max)
    dataset = open_dataset(data.root, data.train_split, transforms=train_transforms(
        data.crop_size, None if scales == (1.0, 1.0) else scales, flip=data.flip, resize=data.resize, finish=False))
    sampler = ResumableBatchSampler(len(dataset), cfg.batch_size, batches + 1, cfg.seed)
    start = time.perf_counter()
    iterator = guarded_batches(SeededView(dataset), sampler, workers, finish=dataset.transforms.batch_finish)
    images = next(iterator)[0]
    first_s = time.perf_counter() - start
    count, start = 0, time.perf_counter()
    for images, _ in iterator:
        count += images.shape[0]
    seconds = time.perf_counter() - start
    return {"images": count, "seconds": seconds, "first_batch_s": first_s, "images_per_s": count / seconds,
            "batch_shape": list(images.shape), "workers": workers, "dataset_images": len(dataset)}


def step_rate(config, run_dir, repeats: tuple[int, int, float]) -> dict[str, Any]:
    """Images/s the config's training step consumes (real `Trainer` step on prefetched batches)."""
    trainer = Trainer(config, run_dir, progress=False)
    trainer.net.train()
    accumulate = config.train.accumulate
    loader = trainer._batches()
    batches = [next(loader) for _ in range(accumulate)]
    trainer._train_step(batches)  # warm-up
    cpu: list[float] = []
    timing = stats(time_calls(lambda: trainer._train_step(batches), trainer.runtime.device, *repeats,
                              cpu_times=cpu), cpu)
    images = sum(b[0].shape[0] for b in batches)
    return {**timing, "images_per_step": images, "images_per_s": images / timing["median_s"],
            "runtime": {"device": str(trainer.runtime.device), "amp": str(trainer.runtime.amp_dtype),
                        "channels_last": trainer.runtime.channels_last}}


def run(ctx: Context) -> dict:
    root = ctx.dataset()
    device = "cuda" if ctx.device.type == "cuda" else "cpu"
    config = load_config(CONFIG, [f"data.root={root}", f"train.device={device}"])
    workers = 2
    loader = loader_rate(config, ctx.pick(30, 4), workers)
    step = step_rate(config, ctx.scratch / "loader_step_run", ctx.pick((3, 8, 10.0), (2, 2, 1.0)))
    ratio = loader["images_per_s"] / step["images_per_s"]
    model = config.model
    how_step = (f"Trainer._train_step of {CONFIG.name} ({model.name} width {model.width}, "
                f"crop {config.data.crop_size}, "
                f"batch {config.train.batch_size}, {config.train.optimizer}) on prefetched batches, "
                f"median of {step['repeats']} after a warm-up, {torch.get_num_threads()} threads")
    figures = [
        figure("loader.images_per_s", loader["images_per_s"], "images/s",
               f"training loader of {CONFIG.name} (batch {config.train.batch_size}, crop {config.data.crop_size}, "
               f"random scale/crop/flip) over the generated dataset ({loader['dataset_images']} images of 128²), "
               f"{workers} workers, {loader['images']} images after the first batch, nothing else running",
               first_batch_s=loader["first_batch_s"]),
        figure("loader.train_step_images_per_s", step["images_per_s"], "images/s", how_step, step_s=step["median_s"]),
    ]
    fig = figure("loader.over_step", ratio, "x", "loader images/s / training step images/s")
    add_target(fig, ratio, LOADER_TARGET, True, f"data loader >= {LOADER_TARGET:g}x the training step's consumption")
    figures.append(fig)
    return {"figures": figures, "details": {"loader": loader, "step": step}}
