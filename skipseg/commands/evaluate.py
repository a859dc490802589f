"""`skipseg evaluate RUN_OR_CKPT [RUN_OR_CKPT ...] --data ROOT --out DIR` (several runs = ensemble)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from skipseg.commands._common import add_inference_args, parse_scales


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
    parser.add_argument("--no-progress", action="store_true")
    add_inference_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from skipseg.data.transforms import eval_transforms
    from skipseg.data.voc import open_dataset
    from skipseg.engine.evaluator import evaluate_dataset
    from skipseg.engine.runtime import make_runtime
    from skipseg.errors import SkipsegError
    from skipseg.inference.predictor import model_from_checkpoint, predict_probs
    from skipseg.metrics import format_table

    scales = parse_scales(args.scales)
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

    def probs_fn(images: torch.Tensor, _indices: list[int]) -> torch.Tensor:
        total = sum(predict_probs(model, images, runtime, flip=args.flip, scales=scales) for model, _, _ in models)
        return total / len(models)

    out = Path(args.out)
    scores = evaluate_dataset(dataset, probs_fn, num_classes, runtime, batch_size=args.batch_size,
                              workers=args.workers, class_names=dataset.class_names,
                              save_pred_dir=out / "pred" if args.save_pred else None,
                              progress=not args.no_progress)
    if runtime.is_main:
        out.mkdir(parents=True, exist_ok=True)
        scores["runs"] = [str(p) for p in args.runs]
        scores["split"] = args.split
        (out / "metrics.json").write_text(json.dumps(scores, indent=2) + "\n")
        print(format_table(scores))
        print(f"metrics → {out / 'metrics.json'}")
    return 0
