"""`skipseg demo [--out DIR] [--quick]`: the main job on the embedded, generated dataset.

Today it generates the default dataset and prints its summary and the commands that train and
evaluate on it; training the whole model line-up lands with the demo issue.
"""
from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT = {"train": 300, "val": 60, "size": 128, "seed": 0}
QUICK = {"train": 64, "val": 16, "size": 96, "seed": 0}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="the main job on the embedded, generated dataset")
    parser.add_argument("--out", default="demo", help="output folder (default: demo/)")
    parser.add_argument("--quick", action="store_true", help="a smaller dataset")
    parser.add_argument("--workers", type=int, default=2, help="generator processes")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from skipseg.data.shapes import format_summary, generate_shapes

    out = Path(args.out)
    spec = QUICK if args.quick else DEFAULT
    summary = generate_shapes(out / "data", workers=args.workers, progress=True, **spec)
    print(format_summary(summary))
    data = out / "data"
    print("\nnext:")
    print(f"  skipseg data check {data}")
    print(f"  skipseg train configs/fcn32s_shapes.yaml data.root={data} --out {out}/runs/fcn32s")
    print(f"  skipseg evaluate {out}/runs/fcn32s --data {data} --out {out}/eval/fcn32s")
    return 0
