"""Optimiser and learning-rate schedule from the train config."""
from __future__ import annotations

import torch
from torch import nn

from skipseg.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, total_steps: int):
    """The multiplier of the base lr at a step: poly (1 − t/T)^p, step γ^⌊t/s⌋, or constant."""
    if cfg.lr_schedule == "poly":
        return lambda step: max(0.0, 1.0 - step / max(1, total_steps)) ** cfg.poly_power
    if cfg.lr_schedule == "step":
        return lambda step: cfg.step_gamma ** (step // max(1, cfg.step_size))
    return lambda step: 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total_steps))
