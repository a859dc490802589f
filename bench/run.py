"""Every benchmark in one process, with its figures as ratios to this machine's peak.

    python -m bench.run [--quick] [--only NAME,...] [--out FILE] [--device auto|cpu|cuda] [--threads N]

Parts (run in this order; `--only` picks some): peak (matmul fp32/bf16), steps (training step and
inference of FCN-8s, DeconvNet, skipnet/Inception-v3), demo_steps (the demo's models: the eager step
against the runtime's, side by side), confusion, crf, loader (vs the training
step), loop (the trainer's images/s vs its bare step, demo models), proposals (batched vs one crop
at a time), probe (skip study: probe mode vs separate runs).
Writes FILE (JSON, default bench/results/latest.json, the whole record: quick.json with --quick,
only_PART[_PART...].json with --only, so a partial run never replaces the record) and FILE with a .md
suffix (the Markdown summary), both rewritten after every part so an interrupted run keeps what it
measured. `steps` and `demo_steps` need the peaks: asked for without `peak`, they measure them first.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

from bench import demo_steps, inference, loader, loop, peak, study, substitutions, training
from bench.common import ROOT, Context, contention_check, fmt, machine_info, make_scratch
from bench.report import markdown, targets
from skipseg.core.runtime import resolve_device
from skipseg.errors import SkipsegError

PARTS: dict[str, Callable[[Context], dict]] = {
    "peak": peak.run,
    "steps": training.run,
    "demo_steps": demo_steps.run,
    "confusion": inference.run_confusion,
    "crf": inference.run_crf,
    "loader": loader.run,
    "loop": loop.run,
    "proposals": inference.run_proposals,
    "probe": study.run,
    "substitutions": substitutions.run,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (~2 min): checks the code")
    parser.add_argument("--only", help=f"comma-separated parts: {', '.join(PARTS)}")
    parser.add_argument("--out", type=Path,
                        help="JSON file (default bench/results/latest.json; quick.json with --quick, "
                        "only_PARTS.json with --only)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's, one per core)")
    args = parser.parse_args(argv)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in PARTS]
        if unknown:
            parser.error(f"--only: unknown part '{unknown[0]}'; parts: {', '.join(PARTS)}")
        if {"steps", "demo_steps"} & set(names) and "peak" not in names:
            names.insert(0, "peak")
        args.parts = [n for n in PARTS if n in names]
    else:
        args.parts = list(PARTS)
    if args.out is None:  # latest.json is the whole record: a quick or partial run writes a file of its own
        name = "quick" if args.quick else f"only_{'_'.join(args.parts)}" if args.only else "latest"
        args.out = ROOT / "bench" / "results" / f"{name}.json"
    return args


def write(result: dict, out: Path) -> None:
    """JSON and Markdown, each through a temporary file (a reader never sees half a file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    result["targets"] = targets(result)
    for path, text in ((out, json.dumps(result, indent=2, default=str) + "\n"),
                       (out.with_suffix(".md"), markdown(result))):
        tmp = path.with_name(f"{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except SkipsegError as exc:
        print(f"--device: {str(exc).split(': ', 1)[-1]}", file=sys.stderr)  # one line, as skipseg's CLI
        return 2
    started = time.perf_counter()
    result = {
        "benchmark": "skipseg benchmarks",
        "command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(device), "parts": {},
    }
    print(f"bench: {', '.join(args.parts)} on {device}{' (quick)' if args.quick else ''} -> {args.out}", flush=True)
    if result["machine"]["contention"]["contended"]:
        print(f"warning: contended cores (a small parallel op {result['machine']['contention']['ratio']:.0f}x slower "
              "than on 1 thread): multi-threaded figures will be low; try quiet cores or --threads 1", flush=True)
    failed = []
    with make_scratch() as scratch:
        ctx = Context(device=device, quick=args.quick, scratch=Path(scratch))
        for name in args.parts:
            print(f"[{name}]", flush=True)
            contention = contention_check()  # per part: other load comes and goes during a run
            if contention["contended"]:
                print(f"  warning: contended cores ({contention['ratio']:.0f}x): figures of this part will be low")
            start = time.perf_counter()
            try:
                part = PARTS[name](ctx)
            except Exception as exc:  # one broken part must not lose the others' figures
                traceback.print_exc()
                part = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(), "figures": []}
                failed.append(name)
            part["seconds"] = time.perf_counter() - start
            part["contention"] = contention
            result["parts"][name] = part
            for fig in part["figures"]:
                status = {True: "target met", False: "target MISSED", None: ""}[fig["target"]["met"]] \
                    if "target" in fig else ""
                print(f"  {fig['name']:<52} {fmt(fig['value'], fig['unit']):<18} {status}", flush=True)
            result["seconds"] = time.perf_counter() - started
            result["load_average_end"] = list(os.getloadavg())
            result["contention_end"] = contention_check()
            write(result, args.out)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')} ({result['seconds']:.0f} s)")
    if failed:
        print(f"failed parts: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
