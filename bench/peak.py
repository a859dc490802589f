"""This machine's matmul peak in fp32 and bf16, measured in the same run as the model figures.

A square GEMM (2·n³ FLOPs) through each way torch offers one: `torch.mm`, `F.linear` and, on CPU, a
1×1 convolution in channels_last (the same GEMM through oneDNN's convolution kernels: on CPUs
without native bf16, `torch.mm` in bf16 falls back to a slow reference kernel while oneDNN still
converts to fp32 and runs fast kernels, and models run their convolutions through oneDNN).
The peak of a precision is the best of these. The size n doubles from 256 until one call takes
≥ 0.25 s (or n reaches the cap), so that a slow path does not take minutes; the best of several
timed calls is kept (the peak is what the hardware can do, not a typical call).
"""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F

from bench.common import Context, figure, sync

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _impls(device: torch.device, dtype: torch.dtype) -> dict[str, Callable[[int], Callable[[], object]]]:
    """name → (n → a call computing one n×n by n×n product)."""

    def mm(n: int):
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        return lambda: torch.mm(a, b)

    def linear(n: int):
        a, w = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        return lambda: F.linear(a, w)

    def conv1x1(n: int):
        side = int(round(n ** 0.5))  # M = side² rows (n rounded to a square), K = N = n
        x = torch.randn(1, n, side, side, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(n, n, 1, 1, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        return lambda: F.conv2d(x, w)

    impls = {"torch.mm": mm, "F.linear": linear}
    if device.type == "cpu":
        impls["conv1x1 channels_last"] = conv1x1
    return impls


def _flops(name: str, n: int) -> float:
    if name.startswith("conv1x1"):
        side = int(round(n ** 0.5))
        return 2.0 * side * side * n * n
    return 2.0 * n ** 3


def measure_impl(name: str, make: Callable[[int], Callable[[], object]], device: torch.device, max_n: int,
                 repeats: int, min_call_s: float = 0.25) -> dict:
    """Best FLOP/s of one implementation at the size chosen as described in the module docstring."""
    n = 256
    while True:
        call = make(n)
        call()  # warm-up: allocation, kernel selection
        sync(device)
        start = time.perf_counter()
        call()
        sync(device)
        took = time.perf_counter() - start
        if took >= min_call_s or n * 2 > max_n:
            break
        n *= 2
    best = took
    for _ in range(repeats - 1):
        sync(device)
        start = time.perf_counter()
        call()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return {"impl": name, "n": n, "best_s": best, "repeats": repeats, "flop_per_s": _flops(name, n) / best}


def run(ctx: Context) -> dict:
    """Figures `matmul_peak_fp32` and `matmul_peak_bf16` (FLOP/s); also stored in `ctx.peaks`."""
    max_n = ctx.pick(8192 if ctx.device.type == "cuda" else 4096, 2048)
    repeats = ctx.pick(5, 3)
    figures, details = [], {}
    for label, dtype in DTYPES.items():
        rows = [measure_impl(name, make, ctx.device, max_n, repeats)
                for name, make in _impls(ctx.device, dtype).items()]
        best = max(rows, key=lambda r: r["flop_per_s"])
        ctx.peaks[label] = best["flop_per_s"]
        details[label] = rows
        for row in rows:
            print(f"  {label} {row['impl']:<24} n={row['n']:<5} {row['flop_per_s'] / 1e9:9.1f} GFLOP/s", flush=True)
        figures.append(figure(
            f"matmul_peak_{label}", best["flop_per_s"], "FLOP/s",
            f"best of {repeats} calls of a square {label} GEMM (n={best['n']}, via {best['impl']}; the best of "
            f"{', '.join(r['impl'] for r in rows)}), {torch.get_num_threads()} threads",
            impl=best["impl"], n=best["n"]))
    if ctx.device.type == "cpu" and ctx.peaks["bf16"] < ctx.peaks["fp32"]:
        note = ("bf16 is slower than fp32 here: this CPU has no native bf16 (no AVX512-BF16/AMX), so oneDNN "
                "converts and the default fast path stays fp32")
    else:
        note = None
    fig = figure("bf16_over_fp32_peak", ctx.peaks["bf16"] / ctx.peaks["fp32"], "x",
                 "bf16 peak / fp32 peak, both measured above", note=note)
    figures.append(fig)
    return {"figures": figures, "details": details}

