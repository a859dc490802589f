"""Training-step and inference time of a registered model on this machine, for each execution path.

    python bench/bench_step.py --model fcn8s --width 1.0 --size 256 --batch 1 --json bench/results/step_fcn8s.json

Paths: fp32 NCHW (the plain baseline), fp32 channels_last, bf16 autocast + channels_last, and what
`precision: auto` resolves to here. One warm-up step, then the median of `--repeats` timed steps.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from skipseg.engine.runtime import Runtime, cpu_has_native_bf16, resolve_precision
from skipseg.models import build_model

PATHS = {
    "fp32_nchw": (None, False),
    "fp32_channels_last": (None, True),
    "bf16_channels_last": (torch.bfloat16, True),
}


def time_path(model_name: str, width: float, size: int, batch: int, amp, channels_last: bool,
              repeats: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    runtime = Runtime(device, amp, channels_last)
    model = runtime.prepare_model(build_model(model_name, width=width))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-6, momentum=0.9)
    images = runtime.to_input(torch.randn(batch, 3, size, size))
    target = torch.randint(0, model.num_classes, (batch, size, size), device=device)

    def train_step() -> None:
        with runtime.autocast():
            logits = model(images)
        F.cross_entropy(logits.float(), target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def infer_step() -> None:
        with torch.inference_mode(), runtime.autocast():
            model(images)

    out = {}
    for name, step, mode in (("train", train_step, model.train), ("infer", infer_step, model.eval)):
        mode()
        step()  # warm-up (oneDNN primitive creation)
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        out[f"{name}_s"] = median
        out[f"{name}_images_per_s"] = batch / median
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fcn8s")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of " + ", ".join(PATHS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    auto = resolve_precision("auto", device)
    result = {
        "model": args.model, "width": args.width, "size": args.size, "batch": args.batch,
        "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cpu_native_bf16": cpu_has_native_bf16(),
        "auto_precision": str(auto).replace("torch.", "") if auto else "fp32", "paths": {},
    }
    for name in args.paths.split(","):
        amp, channels_last = PATHS[name]
        result["paths"][name] = time_path(args.model, args.width, args.size, args.batch, amp, channels_last,
                                          args.repeats, device)
        print(f"{name:20s} train {result['paths'][name]['train_s']:.3f} s/step   "
              f"infer {result['paths'][name]['infer_s']:.3f} s/batch", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
