"""Which evaluation images a compared system trained on: Table 3's check that a comparison is fair.

A system compared in Table 3 is named by a run folder, a staged run, a `skipseg evaluate --out`
folder (whose metrics.json lists the runs it scored) or such a metrics.json. Its training images
are read from the configs in those run folders (`data.root`, `data.train_split`, `data.sbd_root`),
following `model.init_from` to the runs it was initialised from (FCN-8s ← FCN-16s ← FCN-32s), so a
system that saw a validation image at any stage counts it. SBD train overlaps VOC 2012 val, which
is why the FCN reference validates on seg11valid: this check finds such overlaps by image id.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from skipseg.config import ModelConfig, config_from_dict, read_yaml
from skipseg.data.datasets import open_dataset
from skipseg.core.rundir import RunDir
from skipseg.errors import SkipsegError

logger = logging.getLogger(__name__)


def run_folders(path: str | Path) -> list[Path]:
    """The training run folders behind a Table 3 entry (every stage of a staged run); [] if unknown."""
    path = Path(path)
    if path.is_file() and path.suffix == ".json":
        return _runs_of_metrics(path)
    if path.is_file():  # a checkpoint: RUN/checkpoints/NAME.pt
        return run_folders(path.parent.parent) if path.parent.name == RunDir.checkpoints.name else []
    run = RunDir(path)
    stages = run.read_stages() if path.is_dir() else None
    if stages is not None:
        return [path / name for name in stages["stages"]]
    if run.config.is_file():
        return [path]
    for metrics in run.scores_anywhere:
        if metrics.is_file():
            return _runs_of_metrics(metrics)
    return []


def _runs_of_metrics(metrics: Path) -> list[Path]:
    try:
        runs = json.loads(metrics.read_text()).get("runs") or []
    except ValueError:
        return []
    if not runs and RunDir(metrics.parent).config.is_file():  # a run's own final evaluation
        return [metrics.parent]
    return [folder for run in runs for folder in run_folders(run)]


def run_config(run_dir: Path):
    config = RunDir(run_dir).config
    return config_from_dict(read_yaml(config), source=str(config))


def training_ids(path: str | Path) -> set[str] | None:
    """Ids of every image the system at `path` trained on (through `init_from` too); None when a run
    folder, its config or its training data cannot be found."""
    ids: set[str] = set()
    pending, seen = run_folders(path), set()
    if not pending:
        return None
    while pending:
        run_dir = pending.pop()
        if run_dir.resolve() in seen:
            continue
        seen.add(run_dir.resolve())
        try:
            config = run_config(run_dir)
            data = config.data
            ids |= set(open_dataset(data.root, data.train_split, sbd_root=data.sbd_root).ids)
        except (SkipsegError, OSError) as exc:
            logger.warning("%s: training images unknown (%s)", run_dir, exc)
            return None
        if config.model.init_from:
            parents = run_folders(config.model.init_from)
            if not parents:
                logger.warning("%s: init_from %s is not a run folder; its training images are unknown",
                               run_dir, config.model.init_from)
                return None
            pending += parents
    return ids


def scored_on_model(model: ModelConfig) -> str:
    """"cells" for a box-wise grid model (a skip net scored per G×G cell), else "pixels"."""
    from skipseg.models.registry import resolved_options

    return "cells" if model.name == "skipnet" and resolved_options(model)["mode"] == "box" else "pixels"


def scored_on(path: str | Path) -> str:
    """`scored_on_model` of the system at `path` (its final run); "pixels" when it cannot be read."""
    for run_dir in run_folders(path)[-1:]:
        try:
            return scored_on_model(run_config(run_dir).model)
        except (SkipsegError, OSError):
            break
    return "pixels"


def overlap_count(trained: set[str] | None, evaluated: set[str] | None) -> int | None:
    """How many evaluation images are among the training images; None when either is unknown."""
    return None if trained is None or evaluated is None else len(trained & evaluated)


def split_ids(root: str, split: str, sbd_root: str | None = None) -> set[str] | None:
    """The image ids of a split; None (and a warning) when it cannot be read."""
    try:
        return set(open_dataset(root, split, sbd_root=sbd_root).ids)
    except (SkipsegError, OSError) as exc:
        logger.warning("split %s of %s unknown (%s)", split, root, exc)
        return None
