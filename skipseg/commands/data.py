"""`skipseg data shapes` (write the generated dataset) and `skipseg data check` (find broken files)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from skipseg.commands._common import output_folder, positive_int
from skipseg.errors import SkipsegError


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="generate the shapes dataset or check a dataset")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    actions.required = True

    shapes = actions.add_parser(
        "shapes", help="write the procedural shapes dataset (VOC layout) to OUT, deterministic by seed"
    )
    shapes.add_argument("out", metavar="OUT", type=Path, help="output folder")
    shapes.add_argument("--train", type=_count, default=200, help="training images (default 200)")
    shapes.add_argument("--val", type=_count, default=50, help="validation images (default 50)")
    shapes.add_argument("--size", type=positive_int, default=128, help="image side in pixels (default 128)")
    shapes.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    scene = shapes.add_argument_group("scene (defaults: the embedded dataset; smaller = an easier variant)")
    scene.add_argument("--classes", type=positive_int, default=20, help="object classes, 1..20 (default 20)")
    scene.add_argument("--min-scale", type=float, default=0.05, help="smallest object extent / side (0.05)")
    scene.add_argument("--max-scale", type=float, default=0.9, help="largest object extent / side (0.9)")
    scene.add_argument("--max-objects", type=positive_int, default=6, help="objects per image, at most (6)")
    scene.add_argument("--clutter", type=float, default=1.0, help="distractor amount, 0..4 (default 1)")
    shapes.add_argument("--workers", type=_count, default=min(4, os.cpu_count() or 1),
                        help="worker processes (default: the cores, at most 4; 0 = in-process)")
    shapes.set_defaults(func=run_shapes)

    check = actions.add_parser(
        "check",
        help="decode every file of a dataset and report each problem; exit code 1 if there is any",
    )
    check.add_argument("root", metavar="ROOT", type=Path, help="VOC-layout folder, VOCdevkit, or SBD")
    check.add_argument("--split", help="one split (default: every split listed); train_aug needs --sbd-root")
    check.add_argument("--sbd-root", type=Path, help="SBD folder (benchmark_RELEASE) for train_aug")
    check.add_argument(
        "--num-classes", type=positive_int, help="labels must be < N or 255 (default: the dataset's classes)"
    )
    check.set_defaults(func=run_check)


def run_shapes(args: argparse.Namespace) -> int:
    from skipseg.data.shapes import SceneSpec, format_summary, generate_shapes  # heavy; only when asked

    spec = SceneSpec(classes=args.classes, min_scale=args.min_scale, max_scale=args.max_scale,
                     max_objects=args.max_objects, clutter=args.clutter)

    summary = generate_shapes(
        output_folder(args.out, "OUT"),
        train=args.train,
        val=args.val,
        size=args.size,
        seed=args.seed,
        workers=args.workers,
        progress=sys.stderr.isatty(),
        spec=spec,
    )
    print(format_summary(summary))
    return 0


def run_check(args: argparse.Namespace) -> int:
    from skipseg.data.datasets import check_dataset

    if args.num_classes is not None and args.num_classes > 255:
        raise SkipsegError(f"--num-classes {args.num_classes}: at most 255 (255 is the void label)")
    problems = check_dataset(
        args.root, split=args.split, sbd_root=args.sbd_root, num_classes=args.num_classes
    )
    for problem in problems:
        print(problem)
    if problems:
        files = len({p.path for p in problems})
        print(f"{len(problems)} problem{'s' * (len(problems) != 1)} in {files} file{'s' * (files != 1)}")
        return 1
    print("no problems found")
    return 0
