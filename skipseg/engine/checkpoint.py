"""Checkpoints: written atomically (temp file + fsync + rename), found from a run folder or a file.

A checkpoint is a dict with at least `model` (state_dict) and `config` (the resolved run config as a
plain dict); training checkpoints add optimiser, scheduler, iteration, RNG and data-order state.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from skipseg.errors import SkipsegError

CHECKPOINT_DIR = "checkpoints"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` so that a crash at any moment leaves either the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resolve_checkpoint(run_or_checkpoint: str | Path, prefer: str = "best") -> Path:
    """A checkpoint file from a file path or a run folder (`RUN/checkpoints/{best,last}.pt`)."""
    path = Path(run_or_checkpoint)
    if path.is_file():
        return path
    if path.is_dir():
        order = ("best.pt", "last.pt") if prefer == "best" else ("last.pt", "best.pt")
        for name in order:
            candidate = path / CHECKPOINT_DIR / name
            if candidate.is_file():
                return candidate
        raise SkipsegError(f"{path}: no {CHECKPOINT_DIR}/best.pt or {CHECKPOINT_DIR}/last.pt in this run folder")
    raise SkipsegError(f"{path}: no such checkpoint file or run folder")


def load_checkpoint(run_or_checkpoint: str | Path, prefer: str = "best") -> dict[str, Any]:
    """Load a checkpoint dict on CPU; a truncated or foreign file is a clear error naming it."""
    path = resolve_checkpoint(run_or_checkpoint, prefer)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for corrupt files
        raise SkipsegError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise SkipsegError(f"{path}: not a skipseg checkpoint (no 'model' entry)")
    return state
