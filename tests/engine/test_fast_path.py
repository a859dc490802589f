"""The runtime's fast path on the CPU (fully connected layers as matmuls on their live taps,
channels_last) changes speed, not numbers: the demo's models take the same training step as their
plain eager selves (to 1e-9 in float64; the forward to rounding in float32), a run with it ends with the losses and weights of a run without, within float tolerance, and it
resumes bit-exactly. Dropout is off here as in the demo's configs: its masks are drawn in memory
order, so NCHW and channels_last runs draw different ones."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_train_config
from skipseg.core.checkpoint import load_checkpoint
from skipseg.core.runtime import make_runtime
from skipseg.engine.evaluator import grid_targets
from skipseg.engine.trainer import Trainer
from skipseg.models import build_model
from test_trainer import stop_at, train_losses

# The demo's three networks, tiny: (name, options, input size)
MODELS = [
    ("fcn8s", {"num_classes": 5, "width": 0.0625, "batch_norm": True, "dropout": 0.0}, (45, 61)),
    ("deconvnet", {"num_classes": 5, "width": 0.0625, "input_size": 32}, (32, 32)),
    ("skipnet", {"num_classes": 5, "backbone": "inception_v3", "width": 0.0625, "tap": 6, "kernel": 3,
                 "input_size": 75, "grid": 7}, (75, 75)),
]


def _gradients(model, runtime, images, target, dtype):
    """The parameters' gradients of one summed cross-entropy step, as float64."""
    loss = F.cross_entropy(model(runtime.to_input(images.to(dtype))).double(), target, reduction="sum")
    loss.backward()
    return {key: param.grad.double() for key, param in model.named_parameters() if param.grad is not None}


def _worst(grads, reference):
    """The largest gradient difference, relative to the reference's largest gradient."""
    scale = max(grad.abs().max().item() for grad in reference.values())
    assert grads.keys() == reference.keys()  # the substituted layers keep their parameter names
    return max((grads[key] - reference[key]).abs().max().item() for key in reference) / scale


@pytest.mark.parametrize("name, options, size", MODELS, ids=[m[0] for m in MODELS])
def test_the_runtime_step_is_the_eager_step(name, options, size):
    torch.manual_seed(0)
    weights = build_model(name, **options).state_dict()
    images = torch.randn(4, 3, *size)
    target = torch.randint(0, options["num_classes"], (4, *size))
    plain, fast = make_runtime("cpu", "fp32", channels_last=False), make_runtime("cpu", "fp32", channels_last=True)

    def step(runtime, dtype, substitute):
        model = build_model(name, **options)
        model.load_state_dict(weights)
        model = (runtime.prepare_model(model) if substitute else model).to(dtype).train()
        to_cells = grid_targets(model)
        cells = to_cells(target) if to_cells is not None else target  # [N, G, G] for the box-wise skip net
        return _gradients(model, runtime if substitute else plain, images, cells, dtype)

    exact = step(plain, torch.float64, substitute=False)
    assert _worst(step(fast, torch.float64, substitute=True), exact) < 1e-9  # the same computation
    # In float32 the forward agrees to rounding, amplified by batch norm. (Its gradients are compared in float64 above: batch
    # norm over 4 samples, on DeconvNet's 1x1 fc6/fc7 maps, amplifies float32 rounding in the backward
    # by up to 2 % on the eager path alone, differently for every summation order.)
    logits = []
    for runtime, substitute in ((plain, False), (fast, True)):
        model = build_model(name, **options)
        model.load_state_dict(weights)
        model = (runtime.prepare_model(model) if substitute else model).train()
        logits.append(model(runtime.to_input(images)))  # [4, C, H, W] or [4, C, G, G]
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-3, atol=1e-3 * logits[0].abs().max().item())


def test_a_run_with_the_fast_path_ends_where_one_without_does_and_resumes_exactly(tmp_path, shapes_root):
    plain = tiny_train_config(shapes_root, "train.iterations=4", "model.dropout=0.0")
    fast = tiny_train_config(shapes_root, "train.iterations=4", "model.dropout=0.0", "train.channels_last=true")
    Trainer(plain, tmp_path / "plain", progress=False).run()
    Trainer(fast, tmp_path / "fast", progress=False).run()
    assert train_losses(tmp_path / "fast") == pytest.approx(train_losses(tmp_path / "plain"), rel=1e-4)
    a = load_checkpoint(tmp_path / "plain", prefer="last")["model"]
    b = load_checkpoint(tmp_path / "fast", prefer="last")["model"]
    for key in a:
        torch.testing.assert_close(b[key].float(), a[key].float(), rtol=1e-3, atol=1e-4, msg=key)

    Trainer(fast, tmp_path / "resumed", progress=False, callbacks=(stop_at(2),)).run()
    Trainer(fast, tmp_path / "resumed", resume=True, progress=False).run()
    assert train_losses(tmp_path / "resumed") == train_losses(tmp_path / "fast")
    c = load_checkpoint(tmp_path / "resumed", prefer="last")["model"]
    for key in b:
        assert torch.equal(b[key], c[key]), key
