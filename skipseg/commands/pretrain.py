"""`skipseg pretrain BACKBONE --out FILE`: the embedded ImageNet (see `skipseg.engine.pretrain`)."""
from __future__ import annotations

import argparse

from skipseg.commands._common import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain", help="pretrain a backbone's classifier on generated object images (the embedded ImageNet)",
        description="Train a torchvision-layout classifier (vgg16, vgg16_bn or inception_v3 at a --width, or any "
                    "other torchvision classifier) to name the one object in generated images of all 20 "
                    "shape families; write FILE (a torchvision state_dict, fp16) and FILE.json (its card: "
                    "top-1 on a held-out split, the exact command, sha256). Models load it with "
                    "weights=FILE, or pretrained=shapes for the files that ship with skipseg.")
    parser.add_argument("backbone", help="vgg16, vgg16_bn or a torchvision classifier name (e.g. inception_v3)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="recipe overrides, e.g. train.lr=0.02 train.batch_size=64 pretrain.val_images=4000")
    parser.add_argument("--out", required=True, help="the weights file to write (.pt; the card goes beside it)")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier (vgg16, vgg16_bn, inception_v3 (a multiple of "
                        "1/16); default 1.0)")
    parser.add_argument("--size", type=positive_int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--iterations", type=positive_int, default=8000, help="training steps (default 8000)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the images and the initial weights")
    parser.add_argument("--images", type=positive_int, default=50_000, help="training images (default 50000)")
    parser.add_argument("--run", help="run folder for checkpoints and logs (default: FILE without .pt + .run)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted pretraining in its run folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from skipseg.engine.pretrain import pretrain

    card = pretrain(args.backbone, args.out, width=args.width, size=args.size, iterations=args.iterations,
                    seed=args.seed, images=args.images, overrides=list(args.overrides), run_dir=args.run,
                    resume=args.resume, progress=not args.no_progress)
    print(f"wrote {args.out} ({card['backbone']} width {card['width']:g}, {card['input_size']} px): top-1 "
          f"{card['top1']:.1%} on {card['val_images']} held-out images (chance {card['chance_top1']:.0%}) after "
          f"{card['iterations']} iterations, {card['seconds']:.0f} s")
    return 0
