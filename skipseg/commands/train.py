"""`skipseg train CONFIG.yaml [key=value ...] --out RUN` and `skipseg train --resume RUN`.

A config with `stages:` trains its stages in order into RUN/<stage>/ (see `skipseg.engine.stages`);
started again with the same command or `--resume RUN`, completed stages are skipped.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a model from a YAML config",
                                   description="Train a model (a config with `stages:` trains each stage "
                                               "from the previous one's weights). Works under torchrun for DDP.")
    parser.add_argument("config", nargs="?", help="YAML config (omit with --resume)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. train.lr=0.01; stages.NAME.train.iterations=10 for one stage")
    parser.add_argument("--out", help="run folder to create (a staged config: continued if it holds this run)")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in RUN from checkpoints/last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from skipseg.commands._common import output_folder
    from skipseg.config import load_config
    from skipseg.core.rundir import RunDir
    from skipseg.core.runtime import shutdown_distributed
    from skipseg.engine import stages
    from skipseg.engine.trainer import Trainer
    from skipseg.errors import SkipsegError
    from skipseg.models.registry import check_model_config

    overrides = list(args.overrides)
    if args.resume:
        if args.config and "=" in args.config:
            overrides.insert(0, args.config)
        elif args.config:
            raise SkipsegError("train --resume RUN takes the config from RUN/config.yaml; drop the config argument")
        run_dir = output_folder(args.resume, "--resume")
        if stages.is_staged(run_dir):
            return _run_staged(stages.load_staged_config(RunDir(run_dir).stages_config, overrides), run_dir,
                               True, args)
        config = load_config(RunDir(run_dir).config, overrides, check=check_model_config)
    else:
        if not args.config or not args.out:
            raise SkipsegError("train needs a CONFIG.yaml and --out RUN (or --resume RUN)")
        run_dir = output_folder(args.out)
        if stages.has_stages(args.config):
            return _run_staged(stages.load_staged_config(args.config, overrides), run_dir, False, args)
        config = load_config(args.config, overrides, check=check_model_config)
    try:
        with Trainer(config, run_dir, resume=bool(args.resume), progress=not args.no_progress) as trainer:
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


def _run_staged(config, run_dir: Path, resume: bool, args: argparse.Namespace) -> int:
    from skipseg.core.runtime import init_distributed, shutdown_distributed
    from skipseg.engine.stages import run_stages

    rank, _ = init_distributed(config.train.device)
    try:
        result = run_stages(config, run_dir, resume=resume, progress=not args.no_progress, announce=print)
    finally:
        shutdown_distributed()
    if rank == 0:
        last = result["stages"][-1]
        if result["stopped"]:
            print(f"stopped in {last['name']} at iteration {last['step']}; continue with: "
                  f"skipseg train --resume {run_dir}")
        else:
            trained = [s for s in result["stages"] if not s["skipped"]]
            best = f", best val mIoU {100 * max(last['best_miou'], 0):.2f}" if not last["skipped"] else ""
            print(f"done: {len(result['stages'])} stages ({len(trained)} trained now){best} → {run_dir} "
                  f"(= its final stage {result['final']})")
    return 0
