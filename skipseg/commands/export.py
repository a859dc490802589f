"""`skipseg export RUN_OR_CKPT --onnx FILE [--size H W] [--opset N] [--static]`: an ONNX file, checked."""
from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a trained run to ONNX (checked with ONNX Runtime)",
        description="Exports the model of a run folder or checkpoint with torch.onnx's dynamo exporter: "
                    "input 'image' [N,3,H,W] (ImageNet-normalised RGB), output 'logits'. Batch, height and "
                    "width stay dynamic where the model allows. The file is compared with PyTorch by ONNX "
                    "Runtime on random inputs before it is written.")
    parser.add_argument("run", metavar="RUN_OR_CKPT")
    parser.add_argument("--onnx", required=True, metavar="FILE", help="the .onnx file to write")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                        help="input size traced and checked (default: the model's fixed size, else 224 224)")
    parser.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset version (default: the exporter's)")
    parser.add_argument("--static", action="store_true", help="fix every axis (batch 1, --size)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def _shape(shape: list) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def format_report(report: dict) -> str:
    """The few lines `skipseg export` prints."""
    dynamic = report["dynamic_axes"]["image"]
    checked = " and ".join("x".join(str(v) for v in shape) for shape in report["checked"])
    scale = report["logit_scale"]
    relative = report["max_abs_diff"] / scale if scale > 0 else 0.0
    return "\n".join([
        f"exported {report['model']} -> {report['file']} ({report['bytes'] / 2**20:.1f} MiB, opset {report['opset']}, "
        f"{report['export_seconds']:.1f} s)",
        f"  input  image  {_shape(report['input_shape'])}",
        f"  output logits {_shape(report['output_shape'])}",
        f"  dynamic axes: {', '.join(dynamic.values()) if dynamic else 'none (fixed size)'}",
        f"  checked with ONNX Runtime against PyTorch at {checked}: max |diff| {report['max_abs_diff']:.2g} "
        f"(logit scale {scale:.3g}, relative {relative:.2g})",
    ])


def run(args: argparse.Namespace) -> int:
    from skipseg.inference.export import export_onnx

    report = export_onnx(args.run, args.onnx, size=tuple(args.size) if args.size else None,
                         opset=args.opset, static=args.static)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
