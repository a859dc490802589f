"""The optimiser's parameter groups: the FCN reference solver's bias lr x2 and no decay on biases."""
from __future__ import annotations

import dataclasses

import torch

from skipseg.config import TrainConfig
from skipseg.engine.optim import build_optimizer, build_scheduler
from skipseg.models import build_model


def _tiny_fcn():
    torch.manual_seed(0)
    return build_model("fcn16s", num_classes=3, width=1 / 32, dropout=0.0)


def test_biases_get_their_own_lr_and_decay():
    model = _tiny_fcn()
    cfg = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.01, bias_lr_mult=2.0, bias_decay=0.0)
    optimizer = build_optimizer(model, cfg)
    weights, biases = optimizer.param_groups
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}  # not the fixed bilinear upsampling
    assert {id(p) for p in biases["params"]} == {id(p) for n, p in named.items() if n.endswith(".bias")}
    assert len(weights["params"]) + len(biases["params"]) == len(named)
    assert (weights["lr"], weights["weight_decay"]) == (0.1, 0.01)
    assert (biases["lr"], biases["weight_decay"]) == (0.2, 0.0)
    # one SGD step: a bias moves by 2 lr x grad (no decay), a weight by lr x (grad + decay x weight)
    before = {n: p.detach().clone() for n, p in named.items()}
    target = torch.randint(0, 3, (2, 45, 61))
    torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 45, 61)), target).backward()
    grads = {n: p.grad.clone() for n, p in named.items()}
    optimizer.step()
    bias, weight = "head.score_pool4.bias", "backbone.features.0.weight"
    assert grads[bias].abs().sum() > 0
    assert torch.allclose(named[bias], before[bias] - 0.2 * grads[bias], atol=1e-7)
    assert torch.allclose(named[weight], before[weight] - 0.1 * (grads[weight] + 0.01 * before[weight]), atol=1e-7)


def test_the_schedule_scales_each_group_from_its_own_lr():
    model = _tiny_fcn()
    cfg = TrainConfig(optimizer="adam", lr=1e-3, bias_lr_mult=2.0, bias_decay=0.0, lr_schedule="poly", poly_power=1.0)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, total_steps=4)
    optimizer.step()
    scheduler.step()
    assert [round(g["lr"], 12) for g in optimizer.param_groups] == [0.75e-3, 1.5e-3]


def test_default_is_one_group_of_every_trainable_parameter():
    model = _tiny_fcn()
    model.head.score_fr.requires_grad_(False)
    optimizer = build_optimizer(model, dataclasses.replace(TrainConfig(), lr=0.5))
    (group,) = optimizer.param_groups
    assert len(group["params"]) == sum(p.requires_grad for p in model.parameters()) and group["lr"] == 0.5
