"""Training-step and inference time of one registered model, for each execution path side by side.

    python -m bench.bench_step --model fcn8s --width 1.0 --size 256 --batch 1 --json bench/results/step_fcn8s.json

Paths: fp32 NCHW (the plain baseline), fp32 channels_last, bf16 autocast + channels_last, and what
`precision: auto` resolves to here. Timing and FLOP counting are `bench.training.measure`'s (one
warm-up call with the FLOPs counted, then the median of timed calls); `python -m bench.run --only
steps` runs the issue's configurations on the baseline and the default path only.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench.common import machine_info
from bench.training import Case, describe, measure
from skipseg.engine.runtime import Runtime, resolve_device, resolve_precision

PATHS = {
    "fp32_nchw": (None, False),
    "fp32_channels_last": (None, True),
    "bf16_channels_last": (torch.bfloat16, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fcn8s")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up")
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of " + ", ".join(PATHS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = resolve_device(args.device)
    auto = resolve_precision("auto", device)
    options = {} if args.model == "skipnet" else {"width": args.width}
    case = Case(f"{args.model}_{args.size}_b{args.batch}", args.model, args.size, args.batch, options)
    result = {"model": args.model, "width": args.width, "size": args.size, "batch": args.batch,
              "auto_precision": str(auto).replace("torch.", "") if auto else "fp32",
              "machine": machine_info(device), "paths": {}}
    for name in args.paths.split(","):
        amp, channels_last = PATHS[name]
        runtime = Runtime(device, amp, channels_last)
        r = measure(case, runtime, (args.repeats, args.repeats, 0.0))
        result["paths"][name] = r
        print(f"{name:20s} ({describe(runtime)}): train {r['train']['median_s']:.3f} s/step "
              f"({r['train']['flop_per_s'] / 1e9:.1f} GFLOP/s), infer {r['infer']['median_s']:.3f} s/batch "
              f"({r['infer']['flop_per_s'] / 1e9:.1f} GFLOP/s)", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
