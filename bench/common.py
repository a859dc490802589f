"""What every benchmark shares: the run context, timing, figures with targets, machine description.

A *figure* is one measured number with its unit and a sentence on how it was measured; a figure may
carry a *target*: a ratio measured in the same run and the threshold the issue sets for it.
"""
from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Context:
    """One benchmark run: device, quick or full sizes, a scratch folder, results other parts need."""

    device: torch.device
    quick: bool
    scratch: Path
    peaks: dict[str, float] = field(default_factory=dict)  # "fp32"/"bf16" → FLOP/s (from the peak part)

    def pick(self, full: Any, quick: Any) -> Any:
        """The full-run setting, or the quick one under `--quick`."""
        return quick if self.quick else full

    def dataset(self, size: int = 128, classes: int | None = None) -> Path:
        """A generated shapes dataset (300 train / 60 val; default 128 px, all 20 classes), written once
        per run and size."""
        from skipseg.data.shapes import SceneSpec, generate_shapes

        root = self.scratch / f"shapes_{size}_{classes or 'all'}"
        if not root.is_dir():
            spec = SceneSpec(classes=classes) if classes else SceneSpec()
            generate_shapes(root, train=self.pick(300, 32), val=self.pick(60, 8), size=size, seed=0, spec=spec)
        return root


def make_scratch() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="skipseg-bench-")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], device: torch.device, min_repeats: int = 3, max_repeats: int = 10,
               budget_s: float = 5.0, cpu_times: list[float] | None = None) -> list[float]:
    """Seconds of each call of `fn` (already warmed up): at least `min_repeats` calls, more while the
    calls so far took less than `budget_s` in all, at most `max_repeats`. `cpu_times` (if given)
    receives each call's CPU seconds of this process, all threads (≈ threads × wall when the cores
    are free; far less when other processes hold them)."""
    times: list[float] = []
    while len(times) < max_repeats and (len(times) < min_repeats or sum(times) < budget_s):
        sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
        if cpu_times is not None:
            cpu_times.append(time.process_time() - cpu)
    return times


def stats(times: list[float], cpu_times: list[float] | None = None) -> dict[str, Any]:
    """Median, best and every time of a list of call durations (seconds), and the CPU seconds."""
    out = {"median_s": statistics.median(times), "best_s": min(times), "repeats": len(times),
           "times_s": [round(t, 6) for t in times]}
    if cpu_times:
        out["cpu_s_median"] = statistics.median(cpu_times)
        out["cpu_over_wall"] = sum(cpu_times) / sum(times)
    return out


def figure(name: str, value: float | None, unit: str, how: str, **details: Any) -> dict[str, Any]:
    """One measured number: `name` (stable key), value, unit, how it was measured, extra details."""
    return {"name": name, "value": value, "unit": unit, "how": how, **details}


def add_target(fig: dict[str, Any], ratio: float | None, threshold: float, at_least: bool, text: str) -> dict[str, Any]:
    """Attach the issue's target: `ratio` (measured in this run) must be ≥ (or ≤) `threshold`."""
    met = None if ratio is None else (ratio >= threshold if at_least else ratio <= threshold)
    fig["target"] = {"text": text, "ratio": ratio, "threshold": threshold,
                     "comparison": ">=" if at_least else "<=", "met": met}
    return fig


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> dict[str, bool]:
    """The instruction-set flags that decide the fast path (bf16 native or emulated, AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = set(next(line for line in text.splitlines() if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        flags = set()
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "bf16")
    return {name: name in flags for name in wanted}


def cpu_pressure() -> str | None:
    """Linux PSI "some" line: how much of the time runnable tasks waited for a CPU (other load)."""
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None


def contention_check(repeats: int = 50) -> dict[str, Any]:
    """Mean time (so that intermittent stalls count) of a small parallel op (add on 2^20 floats)
    with torch's threads and with one.

    On a machine whose cores other processes hold, each OpenMP parallel region waits until every
    thread is scheduled again: measured here under load, a 2-thread `bincount` took 0.14 s against
    0.0003 s with 1 thread. A ratio far above 1 means this run's multi-threaded figures are not the
    machine's (rerun on quiet cores, or with `--threads 1`)."""
    x = torch.zeros(1 << 20)
    threads = torch.get_num_threads()

    def mean_add() -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            x.add_(1.0)
        return (time.perf_counter() - start) / repeats

    try:
        all_threads = mean_add()
        torch.set_num_threads(1)
        one = mean_add()
    finally:
        torch.set_num_threads(threads)
    return {"threads": threads, "add_2p20_s": all_threads, "add_2p20_one_thread_s": one,
            "ratio": all_threads / one, "contended": threads > 1 and all_threads > 3 * one}


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU, flags, torch and its threads, load at this moment, GPU if used, git commit."""
    from skipseg.config import git_commit

    info: dict[str, Any] = {
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "cpu_flags": cpu_flags(),
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(), "load_average": list(os.getloadavg()),
        "cpu_pressure": cpu_pressure(), "contention": contention_check(), "device": str(device),
        "git_commit": git_commit(ROOT),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                       "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
                       "bf16_supported": torch.cuda.is_bf16_supported()}
    return info


def fmt(value: float | None, unit: str = "") -> str:
    """A number for the summary: 3 significant digits, or a power of ten when large/small."""
    if value is None:
        return "—"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-2):
        text = f"{value:.3g}"
    else:
        text = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return f"{text} {unit}".strip()
