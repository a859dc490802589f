"""Model introspection: parameter count, output shape and every backbone tap at a given input size.

Generic over the registry: a model only has to expose `backbone`, whose forward returns the taps
`{name: Tensor}` described by `backbone.feature_info`. The forward runs on the meta device (shapes
without arithmetic or memory, so a width-1.0 VGG is described instantly) and falls back to a real
CPU forward for a model with an operation the meta device lacks.

A model may also list its layers, `model.layers() -> [(name, module), ...]` (DeconvNet: every row of
the paper's Table 2); the description then has a `layers` entry with each one's output shape, read
by forward hooks.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from skipseg.errors import SkipsegError
from skipseg.models.registry import build_model, check_options

# Options that load weights: accepted and checked, but they cannot change any shape.
INIT_OPTIONS = ("pretrained", "weights", "init_from")


def _check_size(size: Any) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise SkipsegError(f"size must be two integers (H, W), got {size!r}") from None
    if h < 1 or w < 1:
        raise SkipsegError(f"size must be positive, got {h}x{w}")
    return h, w


def describe_module(model: nn.Module, size: tuple[int, int], device: str | torch.device = "cpu") -> dict[str, Any]:
    """Run `model` once on a `[1, 3, H, W]` input and record its output and backbone tap shapes."""
    captured: dict[str, Any] = {}
    handles = [model.backbone.register_forward_hook(
        lambda mod, args, out: captured.__setitem__("taps", out))]
    layers = list(model.layers()) if callable(getattr(model, "layers", None)) else []
    shapes: dict[int, list[int]] = {}
    for i, (_, module) in enumerate(layers):
        handles.append(module.register_forward_hook(
            lambda mod, args, out, i=i: shapes.__setitem__(i, _first_tensor(out).shape[1:])))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, 3, *size, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    taps = captured["taps"]
    result: dict[str, Any] = {
        "params": sum(p.numel() for p in model.parameters()),
        "output_shape": list(out.shape[1:]),
        "taps": [
            {"name": info.name, "channels": int(taps[info.name].shape[1]), "stride": info.stride,
             "shape": list(taps[info.name].shape[-2:])}
            for info in model.backbone.feature_info
        ],
    }
    if layers:
        result["layers"] = [{"name": name, "shape": [int(v) for v in shapes[i]]}
                            for i, (name, _) in enumerate(layers) if i in shapes]
    return result


def _first_tensor(out: Any) -> Tensor:
    """A hook's output, or its first tensor when the module returns several (pool + switches)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def describe_model(name: str, size: tuple[int, int] = (224, 224), **options: Any) -> dict[str, Any]:
    """`{"name", "params", "output_shape": [C, H, W], "taps": [{"name", "channels", "stride",
    "shape": [h, w]}]}` for registered model `name` built with `options`, at input size `size`;
    plus `"layers": [{"name", "shape": [C, h, w]}]` when the model lists its layers."""
    size = _check_size(size)
    check_options(name, options)
    build = {k: v for k, v in options.items() if k not in INIT_OPTIONS}
    try:
        with torch.device("meta"):
            model = build_model(name, **build)
        info = describe_module(model, size, "meta")
    except SkipsegError:
        raise
    except (NotImplementedError, RuntimeError):  # an operation without a meta kernel
        info = describe_module(build_model(name, **build), size, "cpu")
    return {"name": name, **info}


def format_description(info: dict[str, Any]) -> str:
    """The description as an aligned text table."""
    c, h, w = info["output_shape"]
    lines = [
        f"model       {info['name']}",
        f"parameters  {info['params']:,}",
        f"output      {c} x {h} x {w}  (classes x height x width)",
        "",
        f"{'tap':<16}{'channels':>9}{'stride':>8}  shape",
    ]
    for tap in info["taps"]:
        lines.append(f"{tap['name']:<16}{tap['channels']:>9}{tap['stride']:>8}  {tap['shape'][0]} x {tap['shape'][1]}")
    if info.get("layers"):
        lines += ["", f"{'layer':<16}output (height x width x channels)"]
        for layer in info["layers"]:
            c, h, w = layer["shape"]
            lines.append(f"{layer['name']:<16}{h} x {w} x {c}")
    return "\n".join(lines)
