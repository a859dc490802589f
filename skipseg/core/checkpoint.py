"""Checkpoints: written atomically (temp file + fsync + rename), found from a run folder or a file.

A checkpoint is a dict with at least `model` (state_dict) and `config` (the resolved run config as a
plain dict); training checkpoints add optimiser, scheduler, grad-scaler, step and best mIoU (no RNG or
data-order state: both are functions of (seed, step), see `trainer`).
A staged run (`skipseg train` of a config with `stages:`) is a folder of stage run folders with a
`stages.json` marker; as a run it stands for its final stage (`RunDir.final`).

Run folders are shared, so a checkpoint is untrusted input: it holds only tensors, dicts, lists,
numbers and strings, is read with `torch.load(weights_only=True)` (`safe_load`), and a file that
needs more (a pickle calling `os.system`, any class) is refused with one line, never run.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from skipseg.core.rundir import RunDir
from skipseg.errors import SkipsegError, UnsafeFileError

SAFE_LOAD_NOTE = ("skipseg loads checkpoints and weights files with torch.load(weights_only=True) "
                  "and never runs code from them")
_PLAIN = (bool, int, float, str, bytes, type(None))  # exact types: numpy scalars subclass float
# torch's refusals name what the pickle asked for: a blocked module's global, a global not allowed,
# or a class it would build; the os functions are pickled under their C module's name (posix.system).
_WANTED = (re.compile(r"GLOBAL (\S+) whose module"), re.compile(r"GLOBAL (\S+) was not an allowed global"),
           re.compile(r"Can only (?:build|create)[^<]*but got <class '([^']+)'>"))
_OS_MODULES = {"posix": "os", "nt": "os"}


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` so that a crash at any moment leaves either the old or the new file."""
    path = Path(path)
    _check_plain(state, "state")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; a checkpoint in a shared run folder is read by others as
        # every other file there is: the mode an ordinary open() would give it under this umask.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # reading it means setting it: put it straight back
    os.umask(mask)
    return mask


def _check_plain(value: Any, where: str) -> None:
    """Refuse to write what `safe_load` would refuse to read back (a numpy scalar or RNG state, an object)."""
    if isinstance(value, torch.Tensor) or type(value) in _PLAIN:
        return
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            _check_plain(key, f"{where} key")
            _check_plain(item, f"{where}[{key!r}]")
    elif type(value) in (list, tuple, torch.Size):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    else:
        raise TypeError(f"checkpoint {where}: {type(value).__module__}.{type(value).__qualname__} is not a tensor, "
                        "dict, list, number or string; store it as one (checkpoints load with weights_only=True)")


def load_error(path: str | Path, what: str, exc: BaseException) -> SkipsegError:
    """The one-line error for a failed `torch.load(weights_only=True)` of `path`: an `UnsafeFileError`
    naming what the pickle wanted when torch's safe unpickler refused it, else "not a readable {what}"."""
    message = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and message.startswith("Weights only load failed"):
        opcode = re.search(r"Unsupported operand (\d+)", message)
        if opcode:  # random bytes read as a pickle stop here too: most likely a corrupt or foreign file
            return SkipsegError(f"{path}: not a readable {what} (pickle opcode {opcode.group(1)} is not in "
                                "torch's safe unpickler: a corrupt file, or not one written by torch.save)")
        for pattern in _WANTED:
            match = pattern.search(message)
            if match:
                module, _, name = match.group(1).rpartition(".")
                wanted = f"{_OS_MODULES.get(module, module)}.{name}" if module else name
                return UnsafeFileError(f"{path}: not a safe {what}: it needs {wanted} ({SAFE_LOAD_NOTE})")
        # A refusal worded otherwise (another torch version): its own last line says what it was.
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        detail = next((line for line in reversed(lines) if not line.startswith("Check the documentation")), "")
        detail = detail.removeprefix("WeightsUnpickler error:").strip()[:200] or "more than tensors and containers"
        return UnsafeFileError(f"{path}: not a safe {what}: {detail} ({SAFE_LOAD_NOTE})")
    detail = (message.strip().splitlines() or ["the file ends early"])[0]  # EOFError has no message
    return SkipsegError(f"{path}: not a readable {what} ({type(exc).__name__}: {detail})")


def safe_load(path: str | Path, what: str = "checkpoint") -> Any:
    """`torch.load(path, weights_only=True)` on CPU; an unsafe, truncated or foreign file is a
    `SkipsegError` naming it (`load_error`). Deliberately no switch to load an unsafe file anyway."""
    try:
        with warnings.catch_warnings():
            # a plain pickle (protocol 4, not torch.save's) warns first; the refusal below says enough
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise load_error(path, what, exc) from None


def resolve_checkpoint(run_or_checkpoint: str | Path, prefer: str = "best") -> Path:
    """A checkpoint file from a file path or a run folder (`RUN/checkpoints/{best,last}.pt`; a staged
    run's folder: its final stage's)."""
    path = Path(run_or_checkpoint)
    if path.is_file():
        return path
    if path.is_dir():
        run = RunDir(path)
        final = run.final()
        order = ("best.pt", "last.pt") if prefer == "best" else ("last.pt", "best.pt")
        for name in order:
            candidate = final.checkpoint(name)
            if candidate.is_file():
                return candidate
        stages = run.read_stages()
        if stages is not None:
            done = ", ".join(stages.get("completed", [])) or "none"
            raise SkipsegError(f"{path}: staged run whose final stage '{stages['final']}' has no checkpoint yet "
                               f"(completed stages: {done}); continue it with skipseg train --resume {path}")
        folder = RunDir.checkpoints.name
        raise SkipsegError(f"{path}: no {folder}/best.pt or {folder}/last.pt in this run folder")
    raise SkipsegError(f"{path}: no such checkpoint file or run folder")


def load_checkpoint(run_or_checkpoint: str | Path, prefer: str = "best") -> dict[str, Any]:
    """Load a checkpoint dict on CPU (`safe_load`); an unsafe, truncated or foreign file is a one-line
    error naming it."""
    path = resolve_checkpoint(run_or_checkpoint, prefer)
    state = safe_load(path)
    if not isinstance(state, dict) or "model" not in state:
        raise SkipsegError(f"{path}: not a skipseg checkpoint (no 'model' entry)")
    return state
