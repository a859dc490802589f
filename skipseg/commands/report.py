"""`skipseg report RUN_OR_SWEEP ... --out DIR`: one self-contained report.html plus report.md."""
from __future__ import annotations

import argparse
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="HTML + Markdown report of runs, evaluations and sweeps",
        description="Write DIR/report.html (self-contained: images embedded, opens offline) and DIR/report.md: "
                    "the comparison with per-class IoU, Tables 1-3 of each sweep, training curves, the confusion "
                    "matrix of the best system, sample predictions and per-class score maps. Inputs are told "
                    "apart by content: a training run (config.yaml + metrics.csv), an `skipseg evaluate --out` "
                    "folder (metrics.json with \"runs\") or a sweep folder (plan.json).")
    parser.add_argument("inputs", nargs="+", metavar="RUN_OR_SWEEP",
                        help="training run, evaluation or sweep folders (one row each; a sweep gives its best)")
    parser.add_argument("--out", required=True, help="folder for report.html and report.md")
    parser.add_argument("--samples", type=int, default=4, metavar="N",
                        help="images shown with every system's prediction (default 4; 0: none)")
    parser.add_argument("--data", help="dataset root of the sample images (default: the first run's)")
    parser.add_argument("--split", help="split of the sample images (default: the evaluated one)")
    parser.add_argument("--device", default="auto", help="device for the sample predictions: auto, cpu, cuda")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from skipseg.commands._common import output_folder
    from skipseg.errors import SkipsegError
    from skipseg.report.build import headline_table, write_report

    output_folder(args.out)
    if args.samples < 0:
        raise SkipsegError(f"--samples {args.samples}: expected 0 or more")
    start = time.perf_counter()
    page = write_report(args.inputs, args.out, samples=args.samples, data=args.data, split=args.split,
                        device=args.device)
    print(headline_table(args.inputs))
    print(f"report → {page} (and {page.with_suffix('.md')}), {time.perf_counter() - start:.1f} s")
    return 0
