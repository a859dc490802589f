"""`skipseg train CONFIG.yaml [key=value ...] --out RUN` and `skipseg train --resume RUN`."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a model from a YAML config",
                                   description="Train a model. Works under torchrun for DDP.")
    parser.add_argument("config", nargs="?", help="YAML config (omit with --resume)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.lr=0.01")
    parser.add_argument("--out", help="run folder to create")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in RUN from checkpoints/last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from skipseg.config import load_config
    from skipseg.engine.runtime import shutdown_distributed
    from skipseg.engine.trainer import Trainer
    from skipseg.errors import SkipsegError

    overrides = list(args.overrides)
    if args.resume:
        if args.config and "=" in args.config:
            overrides.insert(0, args.config)
        elif args.config:
            raise SkipsegError("train --resume RUN takes the config from RUN/config.yaml; drop the config argument")
        run_dir = Path(args.resume)
        config = load_config(run_dir / "config.yaml", overrides)
    else:
        if not args.config or not args.out:
            raise SkipsegError("train needs a CONFIG.yaml and --out RUN (or --resume RUN)")
        run_dir = Path(args.out)
        config = load_config(args.config, overrides)
    trainer = Trainer(config, run_dir, resume=bool(args.resume), progress=not args.no_progress)
    try:
        result = trainer.run()
    finally:
        shutdown_distributed()
    if trainer.runtime.is_main:
        if result["stopped"]:
            print(f"stopped at iteration {result['step']}; continue with: skipseg train --resume {run_dir}")
        else:
            print(f"done: {result['step']} iterations, best val mIoU {100 * max(result['best_miou'], 0):.2f} "
                  f"→ {run_dir}")
    return 0
