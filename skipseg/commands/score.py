"""`skipseg score`: score a folder of prediction PNGs against ground-truth PNGs (FCN reference metrics)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from skipseg.errors import SkipsegError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score prediction PNGs against ground-truth PNGs",
        description=(
            "Score prediction label PNGs against ground-truth label PNGs matched by file stem: "
            "pixel accuracy, mean accuracy, mean IoU, frequency-weighted IoU and per-class IoU, "
            "from one confusion matrix over all images (ground truth 255 and other values outside "
            "[0, C) ignored). Every ground-truth file needs a prediction; extra predictions are "
            "ignored."
        ),
    )
    parser.add_argument("--pred", required=True, type=Path, metavar="DIR", help="prediction PNGs")
    parser.add_argument("--gt", required=True, type=Path, metavar="DIR", help="ground-truth PNGs")
    classes = parser.add_mutually_exclusive_group()
    classes.add_argument(
        "--num-classes", type=int, metavar="N",
        help="number of classes C (default 21, the VOC classes; other N are named class_0, ...)",
    )
    classes.add_argument(
        "--classes", type=Path, metavar="FILE",
        help="class names, one per line (sets C)",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the scores as JSON here")
    parser.set_defaults(func=run)


def read_class_names(path: Path) -> list[str]:
    """Line i names class i; trailing blank lines are allowed, blank lines between names are not.

    Same rules as `skipseg.data.voc.read_class_names` (which reads ROOT/classes.txt of a dataset).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SkipsegError(f"{path}: class names file not found") from None
    except UnicodeDecodeError as exc:
        raise SkipsegError(f"{path}: unreadable class names file ({exc})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if not names:
        raise SkipsegError(f"{path}: no class names (expected one name per line)")
    if "" in names:
        raise SkipsegError(f"{path}: line {names.index('') + 1} is blank (line i names class i)")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SkipsegError(f"{path}: duplicate class names: {', '.join(duplicates)}")
    return names


def run(args: argparse.Namespace) -> int:
    from skipseg.metrics import format_table, score_folders

    class_names = read_class_names(args.classes) if args.classes is not None else None
    scores = score_folders(args.pred, args.gt, num_classes=args.num_classes, class_names=class_names)
    print(format_table(scores))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0
