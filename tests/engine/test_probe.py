"""Probe mode: one frozen backbone pass per batch for every head; each head learns what it would
learn alone on the frozen features; the sweep's tables come out the same."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_train_config
from skipseg.cli import main
from skipseg.core.checkpoint import load_checkpoint
from skipseg.engine.evaluator import evaluate_model
from skipseg.engine.batched_heads import BatchedProbeNet, head_conv, read_rows
from skipseg.engine.probe import HeadSpec, build_probe, probe_from_run
from skipseg.models.probe import ProbeNet
from skipseg.core.runtime import Runtime
from skipseg.models.skipnet import SkipNet
from test_sweep import tiny_sweep

CPU = Runtime(torch.device("cpu"), None, False)
HEADS = [HeadSpec("noskip", None, None), HeadSpec("tap2_k3", "layer1.0", 3), HeadSpec("tap2_k5", "layer1.0", 5),
         HeadSpec("tap5_k3", "layer3.0", 3)]


def probe_config(root, *extra):
    return tiny_train_config(root, "model.name=skipnet", "model.width=1.0", "model.backbone=resnet18",
                             "model.head_channels=8", "model.grid=5", *extra)


@pytest.mark.parametrize("mode", ["box", "pixel"])
def test_one_backbone_pass_feeds_every_head(shapes_root, mode):
    model = build_probe(probe_config(shapes_root, f"model.mode={mode}"), HEADS).train()
    calls = []
    model.backbone.register_forward_hook(lambda *args: calls.append(1))
    out = model(torch.randn(2, 3, 41, 37))
    assert len(calls) == 1 and list(out) == [h.name for h in HEADS]
    assert all(z.shape == ((2, 21, 5, 5) if mode == "box" else (2, 21, 41, 37)) for z in out.values())
    assert not model.backbone.training and not any(p.requires_grad for p in model.backbone.parameters())
    assert model.heads["tap2_k5"].conv_tap.kernel_size == (5, 5) and not model.heads["noskip"].has_tap


def test_each_head_gets_the_gradient_it_would_get_alone(shapes_root):
    torch.manual_seed(0)
    probe = build_probe(probe_config(shapes_root), HEADS).train()
    for head in probe.heads.values():  # away from the zero init, so every layer gets a gradient
        for p in head.parameters():
            torch.nn.init.normal_(p, std=0.1)
    x, mask = torch.randn(2, 3, 41, 37), torch.randint(0, 21, (2, 41, 37))
    target = probe.target_from_mask(mask)
    sum(F.cross_entropy(z, target, ignore_index=255) for z in probe(x).values()).backward()
    alone = SkipNet(probe.backbone, 21, "layer4.1", "layer1.0", kernel=5, head_channels=8, grid=5,
                    freeze_backbone=True).train()
    alone.head.load_state_dict(probe.heads["tap2_k5"].state_dict())
    F.cross_entropy(alone(x), target, ignore_index=255).backward()
    for (name, a), b in zip(alone.head.named_parameters(), probe.heads["tap2_k5"].parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_read_rows_are_those_the_resampling_weighs():
    assert read_rows(10, 4).tolist() == [0, 1, 3, 4, 5, 6, 8, 9]  # sources 0.75, 3.25, 5.75, 8.25
    assert read_rows(7, 7).tolist() == list(range(7)) and read_rows(3, 8).tolist() == [0, 1, 2]
    assert read_rows(10, 4, "nearest").tolist() == [0, 2, 5, 7]  # nearest: floor(i · 10 / 4)


def test_small_map_conv_has_conv2d_outputs_and_weight_gradients():
    """A 2×3 map under a 5×3 kernel: the batched-matmul weight gradient equals conv2d's."""
    torch.manual_seed(0)
    f, g = torch.randn(3, 6, 2, 3), torch.randn(3, 4, 2, 3)
    w, b = torch.randn(4, 6, 5, 3, requires_grad=True), torch.randn(4, requires_grad=True)
    out = head_conv(f, w, b, (2, 1))
    assert out.grad_fn.name().startswith("SmallMapConv")
    torch.autograd.backward(out, g)
    grads = [w.grad.clone(), b.grad.clone()]
    w.grad = b.grad = None
    torch.autograd.backward(F.conv2d(f, w, b, padding=(2, 1)), g)
    torch.testing.assert_close(out, F.conv2d(f, w, b, padding=(2, 1)))
    torch.testing.assert_close(grads, [w.grad, b.grad])
    assert head_conv(torch.randn(1, 6, 5, 5), w, b, (2, 1)).grad_fn.name() != "SmallMapConvBackward"


@pytest.mark.parametrize("mode, head_options", [
    ("box", ()), ("pixel", ()),
    ("box", ("model.head_activation=none", "model.score_upsampling=nearest", "model.score_init=normal")),
])
def test_bulk_forward_equals_every_head_alone(shapes_root, mode, head_options):
    """Fused top convs, the rows the grid reads in strips (layer1.0: 26×21 → 5×5 reads 10 rows
    bilinearly), a 7×7 kernel trimmed to layer4.0's 4×3 map: each head's scores and gradients are its
    own (up to float32 rounding: the convs sum in another order), with the head options too; and the
    plain `ProbeNet` (head by head) gives those same scores."""
    heads = [HeadSpec("noskip", None, None), HeadSpec("a3", "layer1.0", 3), HeadSpec("a7", "layer1.0", 7),
             HeadSpec("b5", "layer3.0", 5), HeadSpec("c7", "layer4.0", 7), HeadSpec("c3", "layer4.0", 3)]
    torch.manual_seed(0)
    config = probe_config(shapes_root, f"model.mode={mode}", *head_options)
    probe = build_probe(config, heads).train()
    plain = build_probe(config, heads, batched=False).train()
    assert type(probe) is BatchedProbeNet and type(plain) is ProbeNet
    upsampling = probe.upsampling
    assert all(isinstance(h.activation, torch.nn.Identity) == ("model.head_activation=none" in head_options)
               for h in probe.heads.values() if h.has_tap)
    for p in probe.heads.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, mask = torch.randn(2, 3, 101, 83), torch.randint(0, 21, (2, 101, 83))
    target = probe.target_from_mask(mask) if mode == "box" else mask
    taps = probe.features(x)
    assert taps["layer1.0"].shape[-2:] == (26, 21) and len(read_rows(26, 5, upsampling)) == (10 if upsampling == "bilinear" else 5)
    assert taps["layer4.0"].shape[-2:] == (4, 3) and not any(t.requires_grad for t in taps.values())
    out = probe(x)
    plain.load_state_dict(probe.state_dict())  # the substitution keeps the state_dict's keys
    for name, z in plain(x).items():
        torch.testing.assert_close(out[name], z, rtol=1e-4, atol=1e-4, msg=name)
    sum(F.cross_entropy(z, target, ignore_index=255) for z in out.values()).backward()
    assert all(p.grad is None for p in probe.backbone.parameters())
    trimmed = probe.heads["c7"].conv_tap.weight.grad  # [8, 512, 7, 7] on a 4×3 map: columns 0 and 6 unused
    assert trimmed[..., [0, 6]].abs().max() == 0 and trimmed[..., 1:6].abs().sum((0, 1)).min() > 0
    for spec in heads:
        head = probe.heads[spec.name]
        fused = [p.grad.clone() for p in head.parameters()]
        head.zero_grad()
        alone = head(taps[probe.top], taps[spec.tap].contiguous() if spec.tap else None, probe.grid)
        alone = alone if mode == "box" else F.interpolate(alone, size=(101, 83), mode="bilinear")
        torch.testing.assert_close(out[spec.name], alone, rtol=1e-4, atol=1e-4, msg=spec.name)
        F.cross_entropy(alone, target, ignore_index=255).backward()
        for (name, p), g in zip(head.named_parameters(), fused):
            torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-4, msg=f"{spec.name}.{name}")


def test_probe_sweep_gives_the_separate_sweeps_tables(tmp_path, shapes_root):
    config = tiny_sweep(tmp_path, shapes_root)
    for mode in ("separate", "probe"):
        assert main(["sweep", str(config), f"sweep.mode={mode}", "--out", str(tmp_path / mode),
                     "--no-progress", "--no-score-maps"]) == 0
    for table in ("table1.csv", "table2.csv", "table3.csv"):
        separate = (tmp_path / "separate" / "report" / table).read_text().splitlines()
        probe = (tmp_path / "probe" / "report" / table).read_text().splitlines()
        assert separate[0] == probe[0] and len(separate) == len(probe)
        assert [r.split(",")[0] for r in separate] == [r.split(",")[0] for r in probe]
        assert all("—" not in row.split(",")[-1] for row in probe[1:])

    run = tmp_path / "probe" / "runs" / "probe"
    metrics = json.loads((run / "metrics.json").read_text())
    assert sorted(metrics["heads"]) == ["noskip", "tap2_k3"] and metrics["iterations"] == 2
    # the backbone did not move: the checkpoint's equals a fresh build with the run's seed
    torch.manual_seed(0)
    fresh = build_probe(probe_config(shapes_root), [HeadSpec("noskip", None, None)]).backbone.state_dict()
    trained = load_checkpoint(run, prefer="last")["model"]
    assert all(torch.equal(trained[f"backbone.{k}"], v) for k, v in fresh.items())
    # a head scored on its own (as a SkipNet) gives the probe's figures for it
    probe = probe_from_run(run)
    alone = SkipNet(probe.backbone, 21, probe.top, "layer1.0", kernel=3, head_channels=8, grid=5)
    alone.head.load_state_dict(probe.heads["tap2_k3"].state_dict())
    from skipseg.data.transforms import eval_transforms
    from skipseg.data.datasets import open_dataset

    scores = evaluate_model(alone, open_dataset(shapes_root, "val", transforms=eval_transforms()), CPU,
                            workers=0, progress=False)
    assert scores["mean_iou"] == pytest.approx(metrics["heads"]["tap2_k3"]["mean_iou"])
    assert scores["per_class_iou"] == pytest.approx(metrics["heads"]["tap2_k3"]["per_class_iou"], nan_ok=True)
    assert scores["cross_entropy"] == pytest.approx(metrics["heads"]["tap2_k3"]["cross_entropy"], rel=1e-4)


def test_several_adam_steps_of_the_probe_equal_each_head_trained_alone(shapes_root):
    """Over several optimiser steps (Adam: per-parameter state) the jointly trained heads follow
    exactly the trajectories they follow alone on the frozen backbone: weights and cross-entropy."""
    torch.manual_seed(0)
    probe = build_probe(probe_config(shapes_root), HEADS).train()
    for head in probe.heads.values():
        for p in head.parameters():
            torch.nn.init.normal_(p, std=0.1)
    alone = {name: SkipNet(probe.backbone, 21, "layer4.1", spec.tap, kernel=spec.kernel or 3, head_channels=8,
                           grid=5, freeze_backbone=True).train()
             for name, spec in ((h.name, h) for h in HEADS)}
    for name, model in alone.items():
        model.head.load_state_dict(probe.heads[name].state_dict())
    joint = torch.optim.Adam([p for p in probe.parameters() if p.requires_grad], lr=1e-2)
    single = {name: torch.optim.Adam(m.head.parameters(), lr=1e-2) for name, m in alone.items()}
    generator = torch.Generator().manual_seed(1)
    for _ in range(4):
        x, mask = torch.randn(2, 3, 41, 37, generator=generator), torch.randint(0, 21, (2, 41, 37), generator=generator)
        target = probe.target_from_mask(mask)
        losses = {n: F.cross_entropy(z, target, ignore_index=255) for n, z in probe(x).items()}
        joint.zero_grad()
        sum(losses.values()).backward()
        joint.step()
        for name, model in alone.items():
            loss = F.cross_entropy(model(x), target, ignore_index=255)
            torch.testing.assert_close(loss, losses[name], rtol=1e-4, atol=1e-5, msg=name)
            single[name].zero_grad()
            loss.backward()
            single[name].step()
    for name, model in alone.items():
        for (key, a), b in zip(model.head.named_parameters(), probe.heads[name].parameters()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=f"{name}.{key}")
