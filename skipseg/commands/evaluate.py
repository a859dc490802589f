"""`skipseg evaluate RUN_OR_CKPT [RUN_OR_CKPT ...] --data ROOT --out DIR` (several runs = ensemble)."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from skipseg.commands._common import (add_inference_args, output_folder, parse_crf, parse_indices, parse_scales,
                                      positive_int)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="score trained runs on a dataset split",
                                   description="Whole-image evaluation at native size. Several runs are "
                                               "ensembled by averaging their probability maps.")
    parser.add_argument("runs", nargs="+", metavar="RUN_OR_CKPT", help="run folder(s) or checkpoint file(s)")
    parser.add_argument("--data", help="dataset root (default: the first run's data.root)")
    parser.add_argument("--sbd-root", help="SBD root, for split train_aug")
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--save-pred", action="store_true", help="write DIR/pred/<id>.png palette predictions")
    parser.add_argument("--out", required=True, help="output folder for metrics.json (and pred/)")
    parser.add_argument("--max-images", type=positive_int, metavar="N", help="score only the first N images of the split")
    parser.add_argument("--no-progress", action="store_true")
    add_inference_args(parser)
    group = parser.add_argument_group("proposal-wise inference and CRF (DeconvNet §3.3, any model)")
    group.add_argument("--proposals", type=int, default=0, metavar="K",
                       help="predict on the top-K selective-search proposals and aggregate (with the whole "
                            "image: see --whole-image)")
    group.add_argument("--proposal-extend", type=float, default=1.2, metavar="F",
                       help="scale each proposal box by F about its centre, clipped to the image, before cropping "
                            "(default 1.2: the paper's extension of stage-1 training boxes)")
    group.add_argument("--min-box", type=int, default=1000, metavar="AREA",
                       help="drop proposals smaller than AREA pixels (default 1000: EdgeBoxes' own minimum box area, "
                            "minBoxArea, the proposal method of the paper; scale it with the image area)")
    group.add_argument("--whole-image", choices=("extra", "counted", "off"), default="extra",
                       help="the whole image as a proposal: extra (the K boxes + the whole image, default), "
                            "counted (one of the K) or off (so pixels no box covers predict nothing)")
    group.add_argument("--aggregate", choices=("max", "sum"), default="max",
                       help="pixel-wise max (eq. 1, default) or sum (eq. 2) over proposals")
    group.add_argument("--proposal-runs", metavar="I,J",
                       help="1-based indices of the runs predicted proposal-wise (default: all); e.g. "
                            "EDeconvNet: runs/deconvnet runs/fcn8s --proposals 50 --proposal-runs 1")
    group.add_argument("--proposal-batch", type=positive_int, metavar="B",
                       help="crops per forward pass (default: 16 on a GPU, 2 on a CPU, where larger batches "
                            "are slower)")
    group.add_argument("--proposal-cache", help="folder caching proposals per image (default: OUT/proposals)")
    group.add_argument("--crf", action="store_true",
                       help="dense CRF on the (ensembled) probabilities, with the first run's `crf:` config "
                            "section (default: the reference parameters)")
    group.add_argument("--crf-params", metavar="key=value,...",
                       help="override CRF parameters of that section, e.g. bilateral_sxy=30,iterations=5")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from skipseg.data.transforms import eval_transforms
    from skipseg.data.datasets import open_dataset
    from skipseg.engine.evaluator import evaluate_dataset, grid_targets
    from skipseg.core.rundir import RunDir
    from skipseg.core.runtime import make_runtime
    from skipseg.errors import SkipsegError
    from skipseg.inference.pipeline import InferenceOptions, make_probs_fn
    from skipseg.inference.predictor import model_from_checkpoint
    from skipseg.metrics import format_table

    scales = parse_scales(args.scales)
    out = output_folder(args.out)
    if not args.proposal_extend >= 1.0:
        raise SkipsegError(f"--proposal-extend: must be >= 1, got {args.proposal_extend}")
    if args.min_box < 0:
        raise SkipsegError(f"--min-box: must be >= 0 pixels, got {args.min_box}")
    runtime = make_runtime(args.device, args.precision)
    models = [model_from_checkpoint(path, runtime) for path in args.runs]
    first_config = models[0][1]
    classes = {m.num_classes for m, _, _ in models}
    if len(classes) > 1:
        raise SkipsegError(f"{' '.join(args.runs)}: runs predict different numbers of classes {sorted(classes)}")
    root = args.data or first_config.data.root
    dataset = open_dataset(root, args.split, transforms=eval_transforms(),
                           sbd_root=args.sbd_root or first_config.data.sbd_root)
    num_classes = classes.pop()
    if dataset.num_classes != num_classes:
        raise SkipsegError(f"{root}: has {dataset.num_classes} classes but the model predicts {num_classes}")

    options = InferenceOptions(
        flip=args.flip, scales=scales, proposals=args.proposals, aggregate=args.aggregate,
        proposal_extend=args.proposal_extend, min_box=args.min_box, whole_image=args.whole_image,
        proposal_batch=args.proposal_batch, proposal_cache=Path(args.proposal_cache or RunDir(out).proposals),
        proposal_runs=parse_indices(args.proposal_runs, "--proposal-runs"),
        crf=parse_crf(args.crf_params, first_config.crf) if args.crf or args.crf_params else None,
    )
    probs_fn = make_probs_fn([m for m, _, _ in models], dataset.image_path, runtime, options)
    grids = {bool(getattr(m, "output_grid", None)) for m, _, _ in models}
    if len(grids) > 1 or (grids == {True} and (args.proposals or args.crf)):
        raise SkipsegError(f"{' '.join(args.runs)}: box-wise (grid) runs are scored on their grid: they ensemble only "
                           "with each other and take no --proposals or --crf")
    scores = evaluate_dataset(dataset, probs_fn, num_classes, runtime, batch_size=args.batch_size,
                              target_fn=grid_targets(models[0][0]),
                              workers=args.workers, class_names=dataset.class_names,
                              save_pred_dir=out / "pred" if args.save_pred else None,
                              max_images=args.max_images, progress=not args.no_progress)
    if runtime.is_main:
        out.mkdir(parents=True, exist_ok=True)
        scores["runs"] = [str(p) for p in args.runs]
        scores["split"] = args.split
        scores["inference"] = {"flip": args.flip, "scales": list(scales), "proposals": args.proposals,
                               "aggregate": args.aggregate if args.proposals else None,
                               **({"proposal_extend": args.proposal_extend, "min_box": args.min_box,
                                   "whole_image": args.whole_image} if args.proposals else {}),
                               "crf": options.crf is not None}
        if options.crf is not None:
            scores["crf_params"] = dataclasses.asdict(options.crf)  # the first run's `crf:` + --crf-params
        metrics = RunDir(out).scores
        metrics.write_text(json.dumps(scores, indent=2) + "\n")
        print(format_table(scores))
        print(f"metrics → {metrics}")
    return 0
