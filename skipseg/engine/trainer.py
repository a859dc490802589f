"""The training loop shared by every model: exact resume, bf16/channels_last fast path, DDP.

Exact resume without RNG snapshots: the data order and each sample's augmentation are pure functions
of (seed, step) (see `sampling`), and the model's own randomness (dropout) is reseeded at every step
from (seed, step, rank). A run stopped at any step and resumed therefore replays the same batches
and the same dropout masks as one that never stopped, with any number of loader workers.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from skipseg.config import Config, config_to_dict, save_run_config
from skipseg.data.palette import IGNORE_INDEX
from skipseg.data.augmentation import train_transforms
from skipseg.data.transforms import eval_transforms
from skipseg.data.datasets import open_dataset
from skipseg.core.checkpoint import load_checkpoint, save_checkpoint
from skipseg.core.lock import FolderLock
from skipseg.core.rundir import RunDir
from skipseg.engine.evaluator import evaluate_model, grid_targets
from skipseg.core.loading import guarded_batches
from skipseg.engine.logbook import Logbook
from skipseg.engine.optim import build_optimizer, build_scheduler
from skipseg.core.runtime import Runtime, all_reduce_sum, make_runtime, seed_step, sync_batchnorm
from skipseg.core.sampling import ResumableBatchSampler, SeededView
from skipseg.errors import SkipsegError
from skipseg.inference.predictor import model_options

StepCallback = Callable[["Trainer", int, float], None]


class Trainer:
    """Train `config` into `run_dir`; `resume=True` continues from `run_dir/checkpoints/last.pt`.

    Subclasses train other things with the same loop, checkpoints and resume: `build_model`,
    `build_datasets`, `loss_sum` and `validate` (whose `score_key` entry picks `best.pt`).
    """

    score_key = "mean_iou"

    def __init__(self, config: Config, run_dir: str | Path, *, resume: bool = False, progress: bool = True,
                 callbacks: tuple[StepCallback, ...] = ()) -> None:
        self.config, self.run_dir, self.progress, self.callbacks = config, Path(run_dir), progress, callbacks
        self.stop_requested = False
        cfg = config.train
        self.runtime: Runtime = make_runtime(cfg.device, cfg.precision, cfg.channels_last)
        # One writer per run folder, from before anything is read or written there until `close()`.
        self.lock = FolderLock(self.run_dir).acquire() if self.runtime.is_main else None
        try:
            self._setup(resume)
        except BaseException:
            self.close()
            raise

    def _setup(self, resume: bool) -> None:
        config, cfg = self.config, self.config.train
        last = self.folder.last
        if not resume and last.exists():
            raise SkipsegError(f"{self.run_dir}: already holds a run; resume it with --resume {self.run_dir} "
                               "or choose another --out")
        self.train_set, self.val_set = self.build_datasets()
        if len(self.train_set) < cfg.batch_size * self.runtime.world_size:
            raise SkipsegError(f"{config.data.root}: {len(self.train_set)} training samples (data.sampling="
                               f"{config.data.sampling}), fewer than one batch of {cfg.batch_size * self.runtime.world_size}")
        if self.train_set.num_classes != config.model.num_classes:
            raise SkipsegError(f"model.num_classes: {config.model.num_classes}, but {config.data.root} has "
                               f"{self.train_set.num_classes} classes ({', '.join(self.train_set.class_names[:5])}, …)")
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank and every run
        self.model = self.runtime.prepare_model(sync_batchnorm(self.build_model(), self.runtime, cfg.sync_bn))
        _check_input_size(config, self.model)
        self.net: nn.Module = self.model
        if self.runtime.distributed:
            device_ids = [self.runtime.device] if self.runtime.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.optimizer = build_optimizer(self.model, cfg)
        self.total_steps = self._total_steps()
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total_steps)
        # On the device that computes: a GradScaler built for "cuda" (the default) disables itself on a CPU.
        self.scaler = torch.amp.GradScaler(self.runtime.device.type, enabled=self.runtime.amp_dtype == torch.float16)
        self.step, self.best_miou = 0, -1.0
        if resume:
            self._restore(load_checkpoint(last))
        if self.runtime.is_main:
            save_run_config(self.run_dir, config)
        self.logbook = Logbook(self.run_dir, resume_step=self.step if resume else None) if self.runtime.is_main else None

    def close(self) -> None:
        """Give back the run folder's lock (the end of the process gives it back too)."""
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def folder(self) -> RunDir:
        """The run folder's layout (`run_dir`'s)."""
        return RunDir(self.run_dir)

    def build_model(self) -> nn.Module:
        """The model to train (a subclass may train something else, e.g. the probe's many heads)."""
        from skipseg.models import build_model

        return build_model(self.config.model.name, **model_options(self.config))

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        """(training samples with their augmentation, validation images)."""
        data = self.config.data
        val_set = open_dataset(data.val_root or data.root, data.val_split, sbd_root=data.sbd_root,
                               transforms=eval_transforms())
        return build_train_set(self.config, self.run_dir), val_set

    def loss_sum(self, logits, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy summed over the valid pixels (or cells) of a micro-batch."""
        return F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")

    def _total_steps(self) -> int:
        cfg = self.config.train
        if cfg.epochs is None:
            return cfg.iterations
        per_step = cfg.batch_size * cfg.accumulate * self.runtime.world_size
        return max(1, math.ceil(cfg.epochs * len(self.train_set) / per_step))

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.best_miou = state["step"], state["best_miou"]

    def _state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "step": self.step, "best_miou": self.best_miou, "config": config_to_dict(self.config)}

    def save(self, name: str = "last.pt") -> None:
        if self.runtime.is_main:
            save_checkpoint(self.folder.checkpoint(name), self._state())

    def request_stop(self) -> None:
        """Finish the current step, save `last.pt` and return (what SIGINT/SIGTERM do)."""
        self.stop_requested = True

    def _sampler(self) -> ResumableBatchSampler:
        """This rank's micro-batches of (index, augmentation seed) from the current step on."""
        cfg = self.config.train
        return ResumableBatchSampler(len(self.train_set), cfg.batch_size, self.total_steps * cfg.accumulate,
                                     cfg.seed, self.step * cfg.accumulate, self.runtime.rank, self.runtime.world_size)

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # build_train_set's augmentation stops at uint8 crops: each batch is normalised at once.
        finish = getattr(getattr(self.train_set, "transforms", None), "batch_finish", None)
        return guarded_batches(SeededView(self.train_set), self._sampler(), self.config.data.workers,
                               pin_memory=self.runtime.device.type == "cuda", finish=finish)

    def _train_step(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """One optimiser step over `accumulate` micro-batches; returns the step's loss.

        The loss is normalised by the valid pixels of the whole global step (all micro-batches, all
        ranks), so accumulation and DDP give exactly the gradient of the large batch they stand for.
        """
        cfg, rt = self.config.train, self.runtime
        masks = [m.to(rt.device, non_blocking=True) for _, m in batches]
        to_target = grid_targets(self.model)  # a model predicting grid cells learns their labels
        if to_target is not None:
            masks = [to_target(m) for m in masks]
        valid = all_reduce_sum(sum((m != IGNORE_INDEX).sum() for m in masks).float())  # on device: no sync
        denominator = valid.clamp(min=1.0) if cfg.loss_reduction == "mean" else torch.ones((), device=rt.device)
        total = torch.zeros((), device=rt.device)
        for index, ((images, _), target) in enumerate(zip(batches, masks)):
            last = index == len(batches) - 1
            sync = self.net.no_sync() if rt.distributed and not last else contextlib.nullcontext()
            with sync:
                with rt.autocast():
                    logits = self.net(rt.to_input(images))  # [N, C, H, W] (or [N, C, G, G] cells)
                loss_sum = self.loss_sum(logits, target)
                # × world size: DDP averages gradients over ranks, the loss here is a sum over them.
                self.scaler.scale(loss_sum / denominator * rt.world_size).backward()
            total += loss_sum.detach()
        loss = (all_reduce_sum(total) / denominator).item()
        if not math.isfinite(loss):
            raise SkipsegError(f"{self.run_dir}: loss became {loss} at iteration {self.step + 1}; stopped. "
                               f"The last good checkpoint is {self.folder.last} "
                               "(lower train.lr or check the data)")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return loss

    def validate(self) -> dict:
        data = self.config.data
        scores = evaluate_model(self.model, self.val_set, self.runtime, batch_size=self.config.train.batch_size,
                                workers=data.workers, class_names=self.val_set.class_names,
                                max_images=self.config.train.max_val_images, progress=self.progress)
        if self.logbook is not None:
            self.logbook.log(self.step, "val", **{k: scores[k] for k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")})
        return scores

    def run(self) -> dict:
        """Train to the last step (or a stop request); returns {step, loss, best_miou, stopped}."""
        cfg = self.config.train
        handlers = _install_stop_handlers(self.request_stop)
        self.net.train()
        loader = self._batches()
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"train {self.config.model.name}",
                   unit="it", disable=not (self.progress and self.runtime.is_main), dynamic_ncols=True)
        window_loss, window_images, window_start = 0.0, 0, time.perf_counter()
        loss = float("nan")
        try:
            while self.step < self.total_steps and not self.stop_requested:
                batches = [next(loader) for _ in range(cfg.accumulate)]
                # After fetching: DataLoader draws its own seed from this RNG when it starts.
                seed_step(hash((cfg.seed, self.step, self.runtime.rank)) % (2**63), self.runtime.device)
                loss = self._train_step(batches)
                self.step += 1
                images = sum(b[0].shape[0] for b in batches) * self.runtime.world_size
                window_loss, window_images = window_loss + loss, window_images + images
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    steps = self.step % cfg.log_every or cfg.log_every
                    rate = window_images / max(elapsed, 1e-9)
                    if self.logbook is not None:
                        self.logbook.log(self.step, "train", loss=window_loss / steps,
                                         lr=self.scheduler.get_last_lr()[0], images_per_s=rate)
                    bar.set_postfix(loss=f"{window_loss / steps:.4f}", img_s=f"{rate:.1f}")
                    window_loss, window_images, window_start = 0.0, 0, time.perf_counter()
                bar.update(1)
                if self.step % cfg.val_every == 0 or self.step == self.total_steps:
                    score = self.validate()[self.score_key] or 0.0
                    if score > self.best_miou:
                        self.best_miou = score
                        self.save("best.pt")
                    self.net.train()
                if self.step % cfg.checkpoint_every == 0 or self.step == self.total_steps:
                    self.save("last.pt")
                for callback in self.callbacks:  # last: they see the step complete and saved
                    callback(self, self.step, loss)
            if self.stop_requested:
                self.save("last.pt")
        finally:
            bar.close()
            _restore_handlers(handlers)
            if self.logbook is not None:
                self.logbook.close()
        return {"step": self.step, "loss": loss, "best_miou": self.best_miou, "stopped": self.stop_requested}


def build_train_set(config: Config, run_dir: Path) -> Dataset:
    """The training samples of `config.data.sampling`, each through the training augmentation up
    to its uint8 crop (the trainer's loader normalises whole batches, `TrainAugmentation.finish_batch`):
    whole images, or DeconvNet's instance / proposal crops (optionally class-balanced), resized to
    `data.resize` (null: crop_size·250/224, the paper's 250 for 224) before the random crop.
    The crop datasets are deterministic (fixed order, cached proposals, balance by `train.seed`),
    so `len(train_set)` and every index stay the same when a run is resumed."""
    data = config.data
    if data.sampling == "image":
        if data.balance:
            raise SkipsegError("data.balance: class balance repeats object crops; it needs data.sampling "
                               "instances or proposals")
        images = open_dataset(data.root, data.train_split, sbd_root=data.sbd_root,
                              transforms=train_transforms(data.crop_size, _scale_range(config), flip=data.flip,
                                                          resize=data.resize, finish=False))
        images.cache_bytes = data.cache_mb << 20
        return images
    from skipseg.data.instances import InstanceCropDataset, ProposalCropDataset, balanced

    if data.crop_size is None:
        raise SkipsegError(f"data.crop_size: data.sampling={data.sampling} needs a crop size (the model's input, "
                           "224 for DeconvNet)")
    if not data.extend >= 1.0:
        raise SkipsegError(f"data.extend: must be >= 1 (the paper's 1.2), got {data.extend}")
    resize = data.resize or round(data.crop_size * 250 / 224)
    transforms = train_transforms(data.crop_size, _scale_range(config), flip=data.flip, resize=resize, finish=False)
    base = open_dataset(data.root, data.train_split, sbd_root=data.sbd_root)
    base.cache_bytes = data.cache_mb << 20
    workers = max(1, data.workers)  # threads reading the masks once
    if data.sampling == "instances":
        crops = InstanceCropDataset(base, data.extend, transforms, workers=workers)
    else:
        from skipseg.inference.proposals import proposals

        if data.proposals < 1 or not 0.0 < data.min_iou <= 1.0:
            raise SkipsegError(f"data.proposals / data.min_iou: need K >= 1 and 0 < IoU <= 1, got "
                               f"{data.proposals} / {data.min_iou}")
        cache = Path(data.proposal_cache) if data.proposal_cache else RunDir(run_dir).proposals
        search = partial(proposals, k=data.proposals, cache_dir=cache, max_side=data.proposal_side)
        # the proposals once, before training starts: one process per core (cached on disk after that)
        crops = ProposalCropDataset(base, search, data.min_iou, extend=data.extend, transforms=transforms,
                                    workers=workers, search_workers=os.cpu_count() or 1)
    return balanced(crops, seed=config.train.seed) if data.balance else crops


def _check_input_size(config: Config, model: nn.Module) -> None:
    """Training crops must be the size a fixed-input model takes (DeconvNet, a resizing skip net)."""
    fixed, crop = getattr(model, "input_size", None), config.data.crop_size
    if fixed and crop is not None and (crop, crop) != tuple(fixed):
        raise SkipsegError(f"data.crop_size: {crop}, but {config.model.name} takes {fixed[0]}x{fixed[1]} inputs "
                           f"(model.input_size); set data.crop_size={fixed[0]}")


def _scale_range(config: Config) -> tuple[float, float] | None:
    scales = (config.data.scale_min, config.data.scale_max)
    return None if scales == (1.0, 1.0) else scales


def _install_stop_handlers(request_stop: Callable[[], None]) -> dict:
    """First SIGINT/SIGTERM asks for a clean stop after the current step; a second one interrupts."""
    previous = {}

    def handler(signum, frame):
        request_stop()
        signal.signal(signum, previous.get(signum, signal.SIG_DFL))

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    return previous


def _restore_handlers(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
