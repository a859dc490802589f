"""ONNX export with the dynamo exporter, checked against PyTorch with ONNX Runtime before it counts.

The graph has one input `image [N, 3, H, W]` (ImageNet-normalised RGB, float32) and one output
`logits`. Which axes stay dynamic is read off the model: the batch always; height and width unless
the model takes a fixed `input_size` (DeconvNet's 224×224, a skip net built with `input_size`).
Output axes follow from the graph: `[batch, C, height, width]` for per-pixel models, `[batch, C, G, G]`
for a box-wise skip net (`output_grid`). The file is written under a temporary name, run by ONNX
Runtime on random inputs (the traced size, and for dynamic models a second, odd one) and compared
with the PyTorch model; only if the logits agree is it renamed to the requested path.
"""
from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from skipseg.errors import SkipsegError

INPUT_NAME, OUTPUT_NAME = "image", "logits"
DEFAULT_SIZE = (224, 224)
MIN_OPSET = 18  # the oldest opset torch.onnx's dynamo exporter has implementations for


def _odd(value: int) -> int:
    return value | 1


def _summary(exc: BaseException) -> str:
    """One line from an exporter error (its 'Exception summary' when it has one)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    marker = next((i for i, line in enumerate(lines) if "Exception summary" in line), None)
    if marker is not None and marker + 1 < len(lines):
        return lines[marker + 1]
    return lines[-1] if lines else type(exc).__name__


def _axes(value_info: Any) -> tuple[list[int | str], dict[int, str]]:
    """`(shape, {axis: name})` of an ONNX graph input/output: named dims are the dynamic ones."""
    dims = value_info.type.tensor_type.shape.dim
    shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in dims]
    return shape, {i: d for i, d in enumerate(shape) if isinstance(d, str)}


def _forward(model: nn.Module, x: torch.Tensor) -> np.ndarray | None:
    """PyTorch's logits for `x` as float32 numpy, or None when the model refuses the input's size."""
    try:
        with torch.no_grad():
            return model(x).float().numpy()
    except (SkipsegError, RuntimeError):
        return None


def reference_outputs(model: nn.Module, size: tuple[int, int], dynamic: bool, static: bool,
                      seed: int) -> list[tuple[torch.Tensor, np.ndarray]]:
    """Random inputs and PyTorch's logits for the check: first the traced input `[2, 3, H, W]`
    (`[1, 3, H, W]` when static), then for dynamic sizes one image at a second, odd size (taller
    and narrower, else larger), for a dynamic batch one image at the traced size."""
    generator = torch.Generator().manual_seed(seed)
    h, w = size
    first = torch.randn(1 if static else 2, 3, h, w, generator=generator)  # like normalised images
    with torch.no_grad():
        pairs = [(first, model(first).float().numpy())]  # a too small size: the model's own error
    if static:
        return pairs
    others = [(_odd(h + h // 4), _odd(max(1, w - w // 4))), (_odd(h + h // 4), _odd(w + w // 4))] if dynamic else [size]
    for other in others:
        if dynamic and other == size:
            continue
        x = torch.randn(1, 3, *other, generator=generator)
        expected = _forward(model, x)
        if expected is not None:
            return pairs + [(x, expected)]
    raise SkipsegError(f"--size: no second input size near {h}x{w} that the model accepts; try another --size")


def load_for_export(run_or_model: str | Path | nn.Module) -> tuple[nn.Module, str]:
    """`(model, name)`: a module as it is, or the model of a run folder or checkpoint (on the CPU)."""
    if isinstance(run_or_model, nn.Module):
        return run_or_model, type(run_or_model).__name__
    from skipseg.inference.predictor import model_from_checkpoint

    model, config, _ = model_from_checkpoint(run_or_model)
    return model, config.model.name


def _compare(session: Any, pairs: list[tuple[torch.Tensor, np.ndarray]], path: Path, rtol: float) -> tuple[float, float]:
    """ONNX Runtime's logits against PyTorch's: `(max |diff|, max |logit|)`; a shape mismatch or a
    difference above `rtol × logit scale` is a `SkipsegError`."""
    worst, scale, where = 0.0, 0.0, ""
    for x, expected in pairs:
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]  # [N, C, H', W']
        shape = "x".join(str(d) for d in x.shape)
        if got.shape != expected.shape:
            raise SkipsegError(f"{path}: ONNX Runtime gives logits of shape {list(got.shape)} for a {shape} "
                               f"input, PyTorch {list(expected.shape)}; file not written")
        diff = float(np.abs(got - expected).max()) if got.size else 0.0
        scale = max(scale, float(np.abs(expected).max()) if expected.size else 0.0)
        if not np.isfinite(diff) or diff > worst:
            worst, where = diff, shape
    if not worst <= rtol * max(scale, 1e-6):
        raise SkipsegError(f"{path}: ONNX Runtime and PyTorch disagree: max |diff| of the logits {worst:.3g} "
                           f"at {where} (logit scale {scale:.3g}, tolerance {rtol:g} x scale); file not written")
    return worst, scale


def export_onnx(run_or_model: str | Path | nn.Module, path: str | Path, size: tuple[int, int] | None = None,
                opset: int | None = None, static: bool = False, rtol: float = 1e-3, seed: int = 0) -> dict[str, Any]:
    """Export a trained run (folder or checkpoint) or a float32 CPU module to ONNX at `path`.

    `size` is the (H, W) traced and checked (default: the model's `input_size`, else 224×224);
    `static` fixes every axis (batch 1). The file is checked with ONNX Runtime against PyTorch and
    only then written. Returns `{file, bytes, model, opset, input_shape, output_shape, dynamic_axes,
    checked, max_abs_diff, logit_scale, export_seconds, check_seconds}`.
    """
    import onnx
    import onnxruntime

    path = Path(path)
    model, name = load_for_export(run_or_model)
    fixed = getattr(model, "input_size", None)
    if fixed is not None and size is not None and tuple(size) != tuple(fixed):
        raise SkipsegError(f"--size: {name} takes exactly {fixed[0]}x{fixed[1]} inputs, not {size[0]}x{size[1]}")
    size = tuple(int(s) for s in (size or fixed or DEFAULT_SIZE))
    if len(size) != 2 or min(size) < 1:
        raise SkipsegError(f"--size: expected two positive integers H W, got {size}")
    if opset is not None and not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise SkipsegError(f"--opset: {opset}: the dynamo exporter writes opsets {MIN_OPSET} to "
                           f"{onnx.defs.onnx_opset_version()}")
    if not path.parent.is_dir():
        raise SkipsegError(f"{path}: the folder {path.parent} does not exist")
    was_training = model.training
    model.eval()
    try:
        spatial = not static and fixed is None
        pairs = reference_outputs(model, size, spatial, static, seed)
        axes = {} if static else {0: "batch", **({2: "height", 3: "width"} if spatial else {})}
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")  # same folder: the rename is atomic
        start = time.perf_counter()
        try:
            # The exporter logs graph dumps and warnings on the way; the report (or the one-line
            # error, with the full traceback under --debug) says what matters.
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                program = torch.onnx.export(model, (pairs[0][0],), dynamo=True,
                                            dynamic_shapes=(axes,) if axes else None, input_names=[INPUT_NAME],
                                            output_names=[OUTPUT_NAME], opset_version=opset, verbose=False)
            program.save(tmp)
        except Exception as exc:  # the exporter raises many types; all mean "this model did not export"
            tmp.unlink(missing_ok=True)
            hint = "" if static else " (a model whose sizes do not generalise may export with --static)"
            raise SkipsegError(f"{path}: torch.onnx.export failed: {_summary(exc)}{hint}") from exc
        exported = time.perf_counter() - start
        try:
            proto = program.model_proto
            try:
                session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
                diff, scale = _compare(session, pairs, path, rtol)
            except (onnxruntime.capi.onnxruntime_pybind11_state.Fail, RuntimeError) as exc:
                raise SkipsegError(f"{path}: ONNX Runtime cannot run the exported file: {_summary(exc)}; "
                                   "file not written") from exc
            del session
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        model.train(was_training)
    (in_shape, in_axes), (out_shape, out_axes) = _axes(proto.graph.input[0]), _axes(proto.graph.output[0])
    return {
        "file": str(path),
        "bytes": path.stat().st_size,
        "model": name,
        "opset": next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "input_shape": in_shape,
        "output_shape": out_shape,
        "dynamic_axes": {INPUT_NAME: in_axes, OUTPUT_NAME: out_axes},
        "checked": [list(x.shape) for x, _ in pairs],
        "max_abs_diff": diff,
        "logit_scale": scale,
        "export_seconds": round(exported, 2),
        "check_seconds": round(time.perf_counter() - start - exported, 2),
    }
