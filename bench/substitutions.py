"""The run-time substitutions for speed against the plain layers they replace.

`core.fc_matmul` computes the papers' fully connected layers (fc6, DeconvNet's deconv-fc6) as matrix
products on small CPU maps. Here each one is timed against the plain `nn.Conv2d` /
`nn.ConvTranspose2d` with the same parameters, forward + backward, at the sizes the models meet:
FCN's fc6 on the 8×8 map of a 256-pixel crop (batch 1), DeconvNet's fc6 (7×7 map, one output
position) and deconv-fc6 (1×1 → 7×7) at batch 8, and FCN's fc6 on maps around the size where the
matmul path stops (`MATMUL_MAX_POSITIONS` output positions). Figure: plain seconds over substituted
seconds (above 1: the substitution is faster), medians of repeats, in the run's thread count.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.common import Context, figure, stats, time_calls
from skipseg.core.fc_matmul import MATMUL_MAX_POSITIONS, FCConv2d, FCConvTranspose2d


def _pair(plain_class: type, fast_class: type, cin: int, cout: int, kernel: int, padding: int):
    plain = plain_class(cin, cout, kernel, padding=padding)
    fast = fast_class(cin, cout, kernel, padding=padding)
    fast.load_state_dict(plain.state_dict())
    return plain, fast


def _step_time(layer: nn.Module, shape: tuple[int, ...], device: torch.device, repeats) -> dict[str, Any]:
    x = torch.randn(shape, device=device, requires_grad=True)

    def step() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).sum().backward()

    step()  # warm-up
    return stats(time_calls(step, device, *repeats))


def cases(width: float) -> dict[str, tuple[type, type, int, int, int, int, tuple[int, ...]]]:
    """name → (plain class, substitute, in, out, kernel, padding, input shape), channels × `width`."""
    c5, cfc = max(1, round(512 * width)), max(1, round(4096 * width))
    side = 1
    while (side + 1) ** 2 <= MATMUL_MAX_POSITIONS:
        side += 1
    return {
        "fcn_fc6_8x8_b1": (nn.Conv2d, FCConv2d, c5, cfc, 7, 3, (1, c5, 8, 8)),
        f"fcn_fc6_{side}x{side}_b1_at_threshold": (nn.Conv2d, FCConv2d, c5, cfc, 7, 3, (1, c5, side, side)),
        "deconvnet_fc6_7x7_b8": (nn.Conv2d, FCConv2d, c5, cfc, 7, 0, (8, c5, 7, 7)),
        "deconvnet_deconv_fc6_1x1_b8": (nn.ConvTranspose2d, FCConvTranspose2d, cfc, c5, 7, 0, (8, cfc, 1, 1)),
    }


def run(ctx: Context) -> dict:
    out: dict[str, Any] = {"figures": [], "cases": {}}
    if ctx.device.type != "cpu":
        out["skipped"] = "the matmul path is taken on CPUs only"
        return out
    width = ctx.pick(1.0, 0.25)
    repeats = ctx.pick((3, 10, 8.0), (2, 3, 1.0))
    for name, (plain_class, fast_class, cin, cout, kernel, padding, shape) in cases(width).items():
        torch.manual_seed(0)
        plain, fast = _pair(plain_class, fast_class, cin, cout, kernel, padding)
        plain_s = _step_time(plain, shape, ctx.device, repeats)
        fast_s = _step_time(fast, shape, ctx.device, repeats)
        speedup = plain_s["median_s"] / fast_s["median_s"]
        out["cases"][name] = {"plain": plain_s, "substituted": fast_s, "speedup": speedup, "width": width,
                              "shape": list(shape)}
        how = (f"{plain_class.__name__}({cin}, {cout}, {kernel}, padding={padding}) on {list(shape)}, forward + "
               f"backward: {plain_s['median_s'] * 1e3:.1f} ms plain, {fast_s['median_s'] * 1e3:.1f} ms as "
               f"{fast_class.__name__}; {torch.get_num_threads()} threads")
        out["figures"].append(figure(f"fc_matmul_speedup_{name}", speedup, "x", how))
    return out
