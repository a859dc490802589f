"""`skipseg predict RUN_OR_CKPT IMAGE_OR_DIR ... --out DIR`: palette PNG + overlay JPEG per image."""
from __future__ import annotations

import argparse
from pathlib import Path

from skipseg.commands._common import add_inference_args, output_folder, parse_scales

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("predict", help="segment images with a trained run",
                                   description="Writes <stem>.png (VOC palette) and <stem>_overlay.jpg per image.")
    parser.add_argument("run", metavar="RUN_OR_CKPT")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--no-progress", action="store_true")
    add_inference_args(parser)
    parser.set_defaults(func=run)


def collect_images(inputs: list[str]) -> list[Path]:
    from skipseg.errors import SkipsegError

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise SkipsegError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise SkipsegError(f"{path}: no such image file or folder")
    return paths


def run(args: argparse.Namespace) -> int:
    from skipseg.core.runtime import make_runtime
    from skipseg.inference.batch_predict import predict_files
    from skipseg.inference.predictor import model_from_checkpoint

    out = output_folder(args.out)
    runtime = make_runtime(args.device, args.precision)
    model, _, _ = model_from_checkpoint(args.run, runtime)
    paths = collect_images(args.inputs)
    written = predict_files(model, paths, out, runtime, batch_size=args.batch_size,
                            flip=args.flip, scales=parse_scales(args.scales), workers=args.workers,
                            progress=not args.no_progress)
    print(f"{written} images → {args.out}")
    return 0
