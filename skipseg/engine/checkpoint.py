"""Checkpoints: written atomically (temp file + fsync + rename), found from a run folder or a file.

A checkpoint is a dict with at least `model` (state_dict) and `config` (the resolved run config as a
plain dict); training checkpoints add optimiser, scheduler, iteration, RNG and data-order state.
A staged run (`skipseg train` of a config with `stages:`) is a folder of stage run folders with a
`stages.json` marker; as a run it stands for its final stage (`resolve_run_dir`).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from skipseg.errors import SkipsegError

CHECKPOINT_DIR = "checkpoints"
STAGES_FILE = "stages.json"  # {"stages": [names in order], "final": name, "completed": [names]}


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


def read_stages(run_dir: str | Path) -> dict | None:
    """The `stages.json` marker of a staged run folder, or None for any other folder."""
    marker = Path(run_dir) / STAGES_FILE
    if not marker.is_file():
        return None
    try:
        stages = json.loads(marker.read_text())
        if not isinstance(stages["final"], str) or not isinstance(stages["stages"], list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise SkipsegError(f"{marker}: not a readable staged-run marker") from None
    return stages


def resolve_run_dir(run_dir: str | Path) -> Path:
    """A run folder as it is; a staged run's folder → its final stage's run folder (`RUN/<final>`)."""
    stages = read_stages(run_dir)
    return Path(run_dir) if stages is None else Path(run_dir) / stages["final"]


def resolve_checkpoint(run_or_checkpoint: str | Path, prefer: str = "best") -> Path:
    """A checkpoint file from a file path or a run folder (`RUN/checkpoints/{best,last}.pt`; a staged
    run's folder: its final stage's)."""
    path = Path(run_or_checkpoint)
    if path.is_file():
        return path
    if path.is_dir():
        stages = read_stages(path)
        run_dir = resolve_run_dir(path)
        order = ("best.pt", "last.pt") if prefer == "best" else ("last.pt", "best.pt")
        for name in order:
            candidate = run_dir / CHECKPOINT_DIR / name
            if candidate.is_file():
                return candidate
        if stages is not None:
            done = ", ".join(stages.get("completed", [])) or "none"
            raise SkipsegError(f"{path}: staged run whose final stage '{stages['final']}' has no checkpoint yet "
                               f"(completed stages: {done}); continue it with skipseg train --resume {path}")
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
