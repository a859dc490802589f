"""`skipseg pretrain`: the embedded ImageNet — a backbone's torchvision classifier trained on the
generated single-object images (`data/shapes/objects.py`) with the training engine, then written as a
torchvision-format state_dict and a card, the way ImageNet weights ship.

The run itself is an ordinary run folder (config, metrics, TensorBoard, checkpoints), so it resumes
exactly like `skipseg train --resume`. The recipe defaults are what makes the deep VGGs leave the
chance plateau on these images (README, "The embedded ImageNet"): torchvision's VGG initialisation, no dropout,
SGD momentum 0.9 at lr 0.05 after a linear warm-up, poly decay.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import platform
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from skipseg.config import Config, ModelConfig, apply_overrides, config_from_dict
from skipseg.data.shapes.objects import CLASS_NAMES, ObjectClassification, ObjectImages
from skipseg.core.checkpoint import save_checkpoint
from skipseg.engine.trainer import Trainer
from skipseg.errors import SkipsegError
from skipseg.models.classifiers import build_pretrain_classifier, pretrain_archs
from skipseg.models.options import checked_options, option_hints
from skipseg.models.pretrained import card_path, sha256
from skipseg.models.registry import COMMON_OPTIONS
from skipseg.models.taps import module_shapes


@dataclass
class PretrainSection:
    """The classification data: how many images of which size (seeded by `train.seed`)."""

    images: int = 50_000  # training images, rendered once into memory
    val_images: int = 2_000  # the held-out split whose top-1 the card reports
    size: int = 64


# The recipe, as a config (any key can be overridden on the command line). fp32 and NCHW are pinned,
# not `auto`: the card's command then makes the same file on a CPU with native bf16 as on one without.
DEFAULTS = {
    "model": {"num_classes": len(CLASS_NAMES), "dropout": 0.0},
    "data": {"root": "", "crop_size": None, "workers": 0, "flip": True},
    "train": {"batch_size": 32, "lr": 0.05, "optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4,
              "lr_schedule": "poly", "warmup": 300, "val_every": 2_000, "checkpoint_every": 500, "log_every": 50,
              "precision": "fp32", "channels_last": False},
}


@dataclass
class PretrainConfig(Config):
    pretrain: PretrainSection = field(default_factory=PretrainSection)


_NAMED = ("arch", "num_classes", "width")  # the classifier's arguments that `model:` names itself (name: arch)


def classifier_options(model: ModelConfig, source: str = "config") -> dict[str, Any]:
    """The classifier's own options (`dropout`) of `model:`, checked against
    `build_pretrain_classifier` and typed; what is not set keeps the builder's default."""
    own = {k: v for k, v in option_hints(build_pretrain_classifier).items() if k not in _NAMED}
    return checked_options(model.options, own, source, f"pretrain {model.name}", ("name", *COMMON_OPTIONS))


def _check_classifier_options(config: PretrainConfig, source: str) -> None:
    config.model.options = classifier_options(config.model, source)


class ClassifierTrainer(Trainer):
    """The engine's loop on a classifier: logits `[N, 20]`, labels `[N]`, best by held-out top-1."""

    score_key = "top1"
    last_scores: dict | None = None

    def build_model(self) -> nn.Module:
        model = self.config.model
        return build_pretrain_classifier(model.name, model.num_classes, model.width, **classifier_options(model))

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        p, seed = self.config.pretrain, self.config.train.seed
        workers = max(1, torch.get_num_threads())  # rendering, once, before any training thread runs
        return (ObjectClassification(ObjectImages("train", p.images, p.size, seed), self.config.data.flip, workers),
                ObjectClassification(ObjectImages("val", p.val_images, p.size, seed), False, workers))

    @torch.inference_mode()
    def validate(self) -> dict:
        self.model.eval()
        rt, correct, loss, count = self.runtime, 0, 0.0, 0
        for images, labels in DataLoader(self.val_set, batch_size=256):
            with rt.autocast():
                logits = self.model(rt.to_input(images)).float()
            labels = labels.to(rt.device)
            correct += int((logits.argmax(1) == labels).sum())
            loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            count += len(labels)
        scores = {"top1": correct / count, "cross_entropy": loss / count}
        self.last_scores = scores
        if self.logbook is not None:
            self.logbook.log(self.step, "val", **scores)
        return scores


def pretrain_command(arch: str, out: Path, config: PretrainConfig, overrides: list[str]) -> str:
    """The canonical command that makes this file again (what the card records)."""
    args = ["skipseg", "pretrain", arch, "--out", str(out), "--width", f"{config.model.width:g}",
            "--size", str(config.pretrain.size), "--iterations", str(config.train.iterations),
            "--seed", str(config.train.seed), "--images", str(config.pretrain.images)]
    return shlex.join(args + list(overrides))


def load_pretrain_config(arch: str, width: float, size: int, iterations: int, seed: int, images: int,
                         overrides: list[str]) -> PretrainConfig:
    if arch not in pretrain_archs():
        raise SkipsegError(f"pretrain: unknown backbone {arch!r}; valid: vgg16, vgg16_bn or a torchvision "
                           "classifier (see `skipseg models taps --help`), e.g. inception_v3")
    data = copy.deepcopy(DEFAULTS)
    apply_overrides(data, [f"model.name={arch}", f"model.width={width}", f"pretrain.size={size}",
                           f"train.iterations={iterations}", f"train.seed={seed}", f"pretrain.images={images}",
                           *overrides])
    config = config_from_dict(data, PretrainConfig, "pretrain options" + (" + overrides" if overrides else ""),
                              _check_classifier_options)
    train = config.train
    config.train = dataclasses.replace(train, val_every=min(train.val_every, train.iterations),
                                       checkpoint_every=min(train.checkpoint_every, train.iterations))
    return config


def pretrain(arch: str, out: str | Path, *, width: float = 1.0, size: int = 64, iterations: int = 8_000,
             seed: int = 0, images: int = 50_000, overrides: list[str] = (), run_dir: str | Path | None = None,
             resume: bool = False, progress: bool = True) -> dict:
    """Train `arch`'s classifier on the generated object images; write `out` (fp16 state_dict in
    torchvision's layout) and `out.json` (the card); returns the card. A stopped run is an error
    that says how to resume it (nothing is written)."""
    out = Path(out)
    if out.suffix != ".pt":
        raise SkipsegError(f"--out {out}: the weights file must end in .pt (its card is written beside it as .json)")
    if out.is_dir():
        raise SkipsegError(f"--out {out}: is a folder; give the weights file to write (FILE.pt)")
    overrides = list(overrides)
    config = load_pretrain_config(arch, width, size, iterations, seed, images, overrides)
    module_shapes(arch, (size, size), config.model.width)  # a one-line error for images too small for its layers
    run_dir = Path(run_dir) if run_dir else out.with_suffix(".run")
    start = time.perf_counter()
    with ClassifierTrainer(config, run_dir, resume=resume, progress=progress) as trainer:
        result = trainer.run()
        if result["stopped"]:
            raise SkipsegError(f"pretraining stopped at iteration {result['step']}; continue it with the same "
                               f"command and --resume (run folder {run_dir})")
        scores = trainer.last_scores or trainer.validate()  # the loop validates at its last step
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in trainer.model.state_dict().items()}
    save_checkpoint(out, state)  # atomic: an interrupted write never leaves a half file
    card = {
        "backbone": arch, "width": config.model.width, "input_size": config.pretrain.size,
        "num_classes": len(CLASS_NAMES), "classes": CLASS_NAMES, "iterations": trainer.step,
        "images": config.pretrain.images, "val_images": config.pretrain.val_images, "seed": config.train.seed,
        "top1": round(scores["top1"], 4), "val_cross_entropy": round(scores["cross_entropy"], 4),
        "chance_top1": round(1 / len(CLASS_NAMES), 4), "seconds": round(time.perf_counter() - start, 1),
        "resumed": resume, "storage": "float16", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "recipe": {k: v for k, v in dataclasses.asdict(config.train).items()
                   if k in ("batch_size", "lr", "optimizer", "momentum", "weight_decay", "lr_schedule", "warmup",
                            "precision", "channels_last")},
        "command": pretrain_command(arch, out, config, overrides), "sha256": sha256(out),
    }
    card_path(out).write_text(json.dumps(card, indent=2) + "\n")
    return card
