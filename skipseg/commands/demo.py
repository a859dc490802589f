"""`skipseg demo [--out DIR] [--quick]`: the main job on the embedded, generated dataset."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="generate data, train FCN/DeconvNet/the skip study, evaluate, write the report",
        description="Runs the whole pipeline on the generated dataset, printing each skipseg command as it "
                    "starts. Started again, it skips the steps already done.")
    parser.add_argument("--out", default="demo", help="output folder (default: demo/)")
    parser.add_argument("--quick", action="store_true", help="a much smaller run (about 2 minutes)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the generated data and every training (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from skipseg.commands._common import output_folder
    from skipseg.demo import run_demo

    report = run_demo(output_folder(args.out), args.run_command, quick=args.quick, seed=args.seed)  # its last step prints the headline table
    print(f"\nreport: {report}\n        {report.with_suffix('.md')}")
    return 0
