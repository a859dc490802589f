"""Throughput of confusion-matrix accumulation (pixels/s), several implementations side by side.

    python -m bench.confusion_impls [--classes 21] [--batch 8] [--size 512] [--rounds 15]
                                    [--json bench/results/confusion_impls.json]

Inputs: a batch of random labels (`--batch` × `--size` × `--size`, 10 % void 255), as uint8 and as
int64, with torch's intra-op threads set to 1 and to all cores. Each implementation must give the
same matrix as the baseline. The implementations are interleaved round by round so a noisy
neighbour slows them all alike; the figures are the median and the best over all calls, and the
JSON records the CPU pressure (/proc/pressure/cpu) before and after, as other load skews them.
`ConfusionMatrix.update` is what skipseg uses (it also checks that predictions lie in [0, C));
`python -m bench.run --only confusion` measures it alone inside the whole benchmark.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.common import cpu_pressure, sync
from skipseg.metrics import ConfusionMatrix


def make_impls(c: int) -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    def mask_int64(p, t):  # the FCN reference fast_hist, in torch: boolean-index copies, int64
        m = (t >= 0) & (t < c)
        return torch.bincount(c * t[m].long() + p[m].long(), minlength=c * c)

    def mask_int32(p, t):
        m = (t >= 0) & (t < c)
        return torch.bincount(c * t[m].int() + p[m].int(), minlength=c * c)

    def where_extra_bin(dtype):
        def f(p, t):  # no mask copy: ignored pixels go to an extra bin C*C that is dropped
            idx = torch.where((t >= 0) & (t < c), c * t.to(dtype) + p.to(dtype), c * c)
            return torch.bincount(idx.reshape(-1), minlength=c * c + 1)[: c * c]
        return f

    def clamp_bins(dtype):
        def f(p, t):  # clamp target to [-1, C]: out-of-range pixels fall in two end bins
            tc = t.clamp(max=c) if not t.dtype.is_signed else t.clamp(-1, c)
            idx = torch.add(p.to(dtype), tc.to(dtype), alpha=c).clamp_(-1, c * c).add_(1)
            return torch.bincount(idx.reshape(-1), minlength=c * c + 2)[1 : c * c + 1]
        return f

    pool = ThreadPoolExecutor(2)

    def clamp_int16_split(p, t):  # as clamp int16, bincount halves in two Python threads
        tc = t.clamp(max=c) if not t.dtype.is_signed else t.clamp(-1, c)
        idx = torch.add(p.to(torch.int16), tc.to(torch.int16), alpha=c).clamp_(-1, c * c).add_(1)
        flat = idx.reshape(-1)
        half = flat.numel() // 2
        first = pool.submit(torch.bincount, flat[:half], minlength=c * c + 2)
        counts = torch.bincount(flat[half:], minlength=c * c + 2) + first.result()
        return counts[1 : c * c + 1]

    def numpy_fast_hist(p, t):  # fcn.berkeleyvision.org score.py fast_hist, verbatim
        a, b = t.numpy(), p.numpy()
        k = (a >= 0) & (a < c)
        return torch.from_numpy(
            np.bincount(c * a[k].astype(int) + b[k], minlength=c**2)
        )

    cm = ConfusionMatrix(c)

    def confusion_update(p, t):  # skipseg.metrics.ConfusionMatrix.update (kept)
        cm.reset()
        cm.update(p, t)
        return cm.mat.reshape(-1)

    return {
        "numpy fast_hist (FCN score.py)": numpy_fast_hist,
        "bool mask, int64 (baseline)": mask_int64,
        "bool mask, int32": mask_int32,
        "extra bin via where, int64": where_extra_bin(torch.int64),
        "extra bin via where, int16": where_extra_bin(torch.int16),
        "clamp to end bins, int32": clamp_bins(torch.int32),
        "clamp to end bins, int16": clamp_bins(torch.int16),
        "clamp int16, bincount split 2 threads": clamp_int16_split,
        "ConfusionMatrix.update (kept)": confusion_update,
    }


def random_labels(c: int, shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, target) int64 labels in [0, C), the target with 10 % void (255)."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.randint(0, c, shape, generator=gen)
    target[torch.rand(shape, generator=gen) < 0.1] = 255
    return torch.randint(0, c, shape, generator=gen), target


def update_rate(c: int = 21, batch: int = 8, size: int = 512, rounds: int = 30, dtype: torch.dtype = torch.uint8,
                device: torch.device | str = "cpu") -> dict:
    """Pixels/s of `ConfusionMatrix.update` on a `batch`×`size`×`size` batch of `dtype` labels on
    `device` (checked against the boolean-mask baseline first); median and best of `rounds` calls."""
    device = torch.device(device)
    pred, target = random_labels(c, (batch, size, size))
    expected = make_impls(c)["bool mask, int64 (baseline)"](pred, target).view(c, c)
    p, t = pred.to(device, dtype), target.to(device, dtype)
    cm = ConfusionMatrix(c, device=device)
    cm.update(p, t)  # warm-up, and the check
    if not torch.equal(cm.mat.cpu(), expected):
        raise RuntimeError("ConfusionMatrix.update: wrong counts")
    times = []
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        cm.update(p, t)
        sync(device)
        times.append(time.perf_counter() - start)
    med, best = statistics.median(times), min(times)
    return {"classes": c, "shape": [batch, size, size], "dtype": str(dtype).replace("torch.", ""),
            "device": str(device), "threads": torch.get_num_threads(), "rounds": rounds, "median_s": med,
            "best_s": best, "pixels_per_s": p.numel() / med, "pixels_per_s_best": p.numel() / best}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=21)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (3 calls each)")
    ap.add_argument("--json", type=Path, default=Path("bench/results/confusion_impls.json"))
    args = ap.parse_args(argv)

    c = args.classes
    shape = (args.batch, args.size, args.size)
    pred, target = random_labels(c, shape)
    npix = pred.numel()
    impls = make_impls(c)
    cores = os.cpu_count() or 1
    results = []
    pressure_before = cpu_pressure()
    default_threads = torch.get_num_threads()
    try:
        for dtype in (torch.uint8, torch.int64):
            p, t = pred.to(dtype), target.to(dtype)
            expected = impls["bool mask, int64 (baseline)"](p, t)
            for threads in sorted({1, cores}):
                torch.set_num_threads(threads)
                times = {name: [] for name in impls}
                for name, fn in impls.items():
                    got = fn(p, t)
                    if not torch.equal(got.long(), expected):
                        raise SystemExit(f"{name}: wrong counts")
                for _ in range(args.rounds):
                    for name, fn in impls.items():
                        for _ in range(3):
                            start = time.perf_counter()
                            fn(p, t)
                            times[name].append(time.perf_counter() - start)
                for name, ts in times.items():
                    med, best = statistics.median(ts), min(ts)
                    row = {
                        "impl": name, "dtype": str(dtype).replace("torch.", ""),
                        "threads": threads, "ms_median": round(med * 1e3, 3),
                        "mpix_per_s_median": round(npix / med / 1e6, 1),
                        "mpix_per_s_best": round(npix / best / 1e6, 1),
                    }
                    results.append(row)
                    print(f"{row['dtype']:>5}  threads={threads}  {name:<40} "
                          f"{row['ms_median']:8.2f} ms  {row['mpix_per_s_median']:8.1f} Mpx/s "
                          f"(best {row['mpix_per_s_best']:.1f})", flush=True)
    finally:
        torch.set_num_threads(default_threads)

    out = {
        "benchmark": "confusion matrix accumulation",
        "command": "python -m bench.confusion_impls " + " ".join(argv if argv is not None else sys.argv[1:]),
        "num_classes": c, "shape": list(shape), "pixels_per_call": npix, "void_fraction": 0.1,
        "rounds": args.rounds, "calls_per_round": 3,
        "machine": {"cpu_count": cores, "platform": platform.platform(), "processor": platform.processor()},
        "torch": torch.__version__,
        "cpu_pressure_before": pressure_before, "cpu_pressure_after": cpu_pressure(),
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
