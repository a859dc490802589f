"""`skipseg models`: list the registry; `skipseg models describe NAME [key=value ...]`: introspect;
`skipseg models taps BACKBONE`: the candidate taps of any torchvision classifier."""
from __future__ import annotations

import argparse
import json

import yaml

from skipseg.errors import SkipsegError


def parse_options(items: list[str]) -> dict:
    """`["width=0.25", "num_classes=5"]` → `{"width": 0.25, "num_classes": 5}` (values read as YAML)."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SkipsegError(f"model option {item!r} is not of the form key=value")
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise SkipsegError(f"model option {item!r}: unreadable value ({exc})") from None
    return options


def run_list(args: argparse.Namespace) -> int:
    from skipseg.models.registry import list_models

    from skipseg.models.pretrained import accepted_sets

    models = list_models()
    width = max(map(len, models), default=0)
    for name, description in models.items():
        print(f"{name:<{width}}  {description}")
        print(f"{'':<{width}}  pretrained: {', '.join(accepted_sets(name))}")
    return 0


def run_describe(args: argparse.Namespace) -> int:
    from skipseg.models.describe import describe_model, format_description

    info = describe_model(args.name, size=tuple(args.size), **parse_options(args.options))
    print(json.dumps(info, indent=2) if args.json else format_description(info))
    return 0


def run_taps(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from skipseg.models.taps import find_taps, format_taps

    size = tuple(args.size) if args.size else None
    taps = find_taps(args.backbone, size, args.width)
    if args.stages:
        taps = [t for t in taps if t.stage_end]
    if args.json:
        print(json.dumps({"backbone": args.backbone, "width": args.width, "size": size, "taps": [asdict(t) for t in taps]}, indent=2))
    else:
        print(format_taps(args.backbone, taps, size))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help="list the models; describe one", description="List the registered models (name and description)."
    )
    parser.set_defaults(func=run_list)
    sub = parser.add_subparsers(dest="models_command", metavar="{describe,taps}")
    describe = sub.add_parser(
        "describe",
        help="parameters, output shape and backbone taps of a model",
        description="Build a model and report its parameter count, output shape and every backbone tap "
        "(name, channels, stride, spatial shape) at the given input size.",
    )
    describe.add_argument("name", help="model name (see `skipseg models`)")
    describe.add_argument("options", nargs="*", metavar="key=value",
                          help="model options, values read as YAML (e.g. width=0.25 num_classes=5)")
    describe.add_argument("--size", nargs=2, type=int, default=[224, 224], metavar=("H", "W"),
                          help="input height and width (default 224 224)")
    describe.add_argument("--json", action="store_true", help="print JSON")
    describe.set_defaults(func=run_describe)
    taps = sub.add_parser(
        "taps",
        help="candidate skip taps of a torchvision backbone",
        description="Find the candidate taps of a torchvision classifier (every block end and every layer "
        "after which the stride changes, up to the global pooling), numbered from the bottom, with "
        "channels and stride; built without weights and traced on the meta device (no computation).",
    )
    taps.add_argument("backbone", help="torchvision classifier name, e.g. inception_v3, resnet50, convnext_tiny")
    taps.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="also show each tap's shape at this input size")
    taps.add_argument("--width", type=float, default=1.0,
                      help="channel multiplier (vgg16 and vgg16_bn only, as model.width; default 1.0)")
    taps.add_argument("--stages", action="store_true", help="only the last tap at each stride")
    taps.add_argument("--json", action="store_true", help="print JSON")
    taps.set_defaults(func=run_taps)
