"""Command line: each subcommand lives in `skipseg.commands.<name>` and maps arguments to a function
(the command modules import their work lazily, so `skipseg --help` does not load torch).

Errors: a `SkipsegError` (or a missing file) is printed as one line `skipseg: error: ...` with exit
code 2; the traceback only with `--debug`. The `skipseg` loggers' messages (how each model was
initialised: which weights, what `init_from` copied, kept or started afresh) go to stderr.
"""
from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import Sequence

from skipseg.commands import data, demo, evaluate, export, models, predict, pretrain, report, score, sweep, train
from skipseg.errors import SkipsegError

# Command modules, in the order `skipseg --help` lists them. Each defines `register(subparsers)`.
COMMAND_MODULES = (demo, data, score, models, pretrain, train, evaluate, predict, sweep, report, export)


class _StderrHandler(logging.Handler):
    """Writes each record to the `sys.stderr` of the moment (tests and the demo swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def _show_logs() -> None:
    logger = logging.getLogger("skipseg")
    if not any(isinstance(handler, _StderrHandler) for handler in logger.handlers):
        logger.addHandler(_StderrHandler())
        logger.setLevel(logging.INFO)


def version_text() -> str:
    """`skipseg 0.1.0 (torch 2.14.1, torchvision 0.29.1; cpu: 2 threads, fp32)`: the package's version
    from its installed metadata, the torch it runs on and the device and precision `auto` picks."""
    from importlib.metadata import PackageNotFoundError, version

    import torch
    import torchvision

    from skipseg import __version__
    from skipseg.core.runtime import resolve_device, resolve_precision

    try:
        own = version("skipseg")
    except PackageNotFoundError:  # run from a source tree that was never installed
        own = __version__
    device = resolve_device("auto")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    precision = resolve_precision("auto", device)
    return (f"skipseg {own} (torch {torch.__version__}, torchvision {torchvision.__version__}; {device.type}: {where}, "
            f"{str(precision).replace('torch.', '') + ' autocast' if precision else 'fp32'})")


class _Version(argparse.Action):
    """`--version`: prints `version_text()` (torch is imported only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version, torch's and the device, and exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skipseg",
        description="Train, evaluate, compare and explain semantic segmentation networks.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action=_Version)
    # A command that runs other command lines (the demo) gets this entry point, not an import of it.
    parser.set_defaults(run_command=main)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may come after options (`train c.yaml --out RUN train.lr=0.1`).
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = list(args.overrides or []) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _show_logs()
    try:
        result = args.func(args)
    except SkipsegError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"skipseg: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        if args.debug:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"skipseg: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("skipseg: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
