"""Argument helpers shared by the command modules."""
from __future__ import annotations

import argparse
from pathlib import Path

from skipseg.errors import SkipsegError


def output_folder(path: str | Path, flag: str = "--out") -> Path:
    """`path` as the folder a command writes into (created later if missing): a one-line
    `SkipsegError` when it exists as a file, before anything is read or written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SkipsegError(f"{flag} {path}: exists and is not a folder; give a folder path (a new one is created)")
    return path


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_scales(text: str) -> tuple[float, ...]:
    """'0.75,1,1.25' → (0.75, 1.0, 1.25)."""
    try:
        scales = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SkipsegError(f"--scales: expected comma-separated numbers like 0.75,1,1.25, got '{text}'") from None
    if not scales or any(s <= 0 for s in scales):
        raise SkipsegError(f"--scales: scales must be positive, got '{text}'")
    return scales


def add_inference_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flip", action="store_true", help="average with the horizontally flipped prediction")
    parser.add_argument("--scales", default="1", help="comma-separated test scales, e.g. 0.75,1,1.25")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    parser.add_argument("--workers", type=int, default=2, help="data-loading worker processes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))


def parse_indices(text: str | None, flag: str) -> list[int] | None:
    """'1,3' (1-based, as users count runs) → [0, 2]; None stays None."""
    if text is None:
        return None
    try:
        indices = [int(part) - 1 for part in text.split(",") if part.strip()]
    except ValueError:
        raise SkipsegError(f"{flag}: expected comma-separated run numbers like 1,2, got '{text}'") from None
    if not indices or min(indices) < 0:
        raise SkipsegError(f"{flag}: run numbers start at 1, got '{text}'")
    return indices


def parse_crf(text: str | None, base=None):
    """CRF parameters: `base` (a run config's `crf` section; default: the reference defaults) with
    'key=value,...' overrides."""
    import dataclasses

    from skipseg.inference.crf import CRFParams

    values: dict = {}
    fields = {f.name: f.type for f in dataclasses.fields(CRFParams)}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, _, raw = item.partition("=")
        key = key.strip()
        if key not in fields:
            raise SkipsegError(f"--crf-params: unknown key '{key}'; valid keys: {', '.join(fields)}")
        try:
            values[key] = int(raw) if key == "iterations" else float(raw)
        except ValueError:
            raise SkipsegError(f"--crf-params: '{key}' needs a number, got '{raw}'") from None
    return dataclasses.replace(base, **values) if base is not None else CRFParams(**values)
