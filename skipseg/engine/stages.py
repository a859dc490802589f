"""Staged training: several trainings in one config, each starting from the previous one's weights
(DeconvNet §4.2: stage 1 on instance crops, stage 2 on proposal crops from stage 1's weights).

A staged config is a run config plus `stages:`, a list of `{name, data: {...}, train: {...}}`; a
stage is the run config with the stage's data/train keys put over it. `skipseg train CONFIG --out RUN`
lays out

    RUN/stages.yaml   the resolved staged config (command-line overrides folded in)
    RUN/stages.json   the marker: stage names in order, the final one, the completed ones
    RUN/<name>/       an ordinary run folder per stage; every stage after the first starts from the
                      previous stage's `checkpoints/last.pt` (its `model.init_from`)

Wherever a run folder is taken (evaluate, predict, `init_from`), RUN stands for its final stage
(`RunDir.final`). Started again (the same command, or `train --resume RUN`), completed
stages are skipped and the unfinished one resumes exactly from its `last.pt`.

Overrides: `key=value` sets the key in the base config and in every stage that sets it too (the
command line wins over the file); `stages.NAME.key=value` sets it in stage NAME only.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from skipseg.config import Config, apply_overrides, config_from_dict, config_to_dict, file_holds, read_yaml
from skipseg.core.lock import FolderLock
from skipseg.core.rundir import RunDir
from skipseg.core.runtime import barrier, init_distributed
from skipseg.engine.trainer import StepCallback, Trainer
from skipseg.errors import SkipsegError
from skipseg.models.registry import check_model_config

STAGE_SECTIONS = ("data", "train")  # what a stage may change; the model stays (its weights carry over)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass
class StageSpec:
    """One stage: its name (its run folder RUN/<name>) and the data/train keys it changes."""

    name: str = ""
    data: dict[str, Any] | None = None
    train: dict[str, Any] | None = None


@dataclass
class StagedConfig(Config):
    stages: list[StageSpec] = field(default_factory=list)


def has_stages(path: str | Path) -> bool:
    """Whether the YAML config at `path` is a staged one (has a `stages:` key)."""
    return "stages" in read_yaml(path)


def _has_key(node: Any, parts: Sequence[str]) -> bool:
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def load_staged_config(path: str | Path, overrides: Sequence[str] = ()) -> StagedConfig:
    """Read a staged config, apply overrides (see the module docstring), check every stage's config."""
    data = read_yaml(path)
    source = f"{path}{' + overrides' if overrides else ''}"
    plain = [o for o in overrides if not o.strip().startswith("stages.")]
    apply_overrides(data, plain)
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages or not all(isinstance(s, dict) for s in stages):
        raise SkipsegError(f"{source}: key 'stages' must list at least one stage, each a mapping "
                           "{name, data, train}")
    for item in plain:  # the command line wins over what a stage sets
        parts = item.split("=", 1)[0].strip().split(".")
        for stage in stages:
            if _has_key(stage, parts):
                apply_overrides(stage, [item])
    for item in overrides:
        if item.strip().startswith("stages."):
            name, _, rest = item.strip()[len("stages."):].partition(".")
            stage = next((s for s in stages if s.get("name") == name), None)
            if stage is None or not rest:
                raise SkipsegError(f"override '{item}': expected stages.NAME.key=value with NAME one of "
                                   f"{', '.join(str(s.get('name')) for s in stages)}")
            apply_overrides(stage, [rest])
    config = config_from_dict(data, StagedConfig, source, check_model_config)
    names = [stage.name for stage in config.stages]
    for i, name in enumerate(names):
        taken = (RunDir.checkpoints.name, RunDir.proposals.name)
        if not _NAME.fullmatch(name) or name in taken:
            raise SkipsegError(f"{source}: key 'stages[{i}].name' must be a folder name (letters, digits, "
                               f"_ . -), not {' or '.join(taken)}; got {name!r}")
        if names.count(name) > 1:
            raise SkipsegError(f"{source}: stage name {name!r} is used twice")
    stage_configs(config, None, source)  # every stage's keys and types checked now, not hours later
    return config


def stage_configs(config: StagedConfig, out: str | Path | None, source: str = "config") -> list[tuple[str, Config]]:
    """`[(name, run config)]` of every stage; with `out`, each stage after the first gets
    `model.init_from = out/<previous>/checkpoints/last.pt`."""
    base = config_to_dict(config)
    base.pop("stages")
    result: list[tuple[str, Config]] = []
    for i, stage in enumerate(config.stages):
        merged = copy.deepcopy(base)
        for section in STAGE_SECTIONS:
            changes = getattr(stage, section) or {}
            if not isinstance(changes, dict):
                raise SkipsegError(f"{source}: key 'stages[{i}].{section}' must be a mapping, got {changes!r}")
            merged[section].update(changes)
        if i > 0 and out is not None:
            merged["model"]["init_from"] = str(RunDir(out).stage(result[-1][0]).last)
        result.append((stage.name, config_from_dict(merged, Config, f"{source}, stage '{stage.name}'",
                                                    check_model_config)))
    return result


def is_staged(run_dir: str | Path) -> bool:
    return RunDir(run_dir).read_stages() is not None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def prepare(config: StagedConfig, out: str | Path, resume: bool = False, write: bool = True) -> dict:
    """Write RUN/stages.yaml and RUN/stages.json (or check that RUN holds this very staged run);
    returns the marker. `resume` accepts a changed config (e.g. `train --resume RUN data.workers=0`)."""
    out = Path(out)
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    run = RunDir(out)
    existing = run.stages_config
    marker = run.read_stages()
    if marker is None and run.holds_run():
        raise SkipsegError(f"{out}: holds a single (unstaged) run; choose another --out")
    if not resume and existing.is_file() and not file_holds(existing, config):
        raise SkipsegError(f"{out}: holds a staged run of another config (see {existing}); choose another --out "
                           f"or continue it with skipseg train --resume {out}")
    names = [stage.name for stage in config.stages]
    completed = [n for n in (marker or {}).get("completed", []) if n in names]
    marker = {"stages": names, "final": names[-1], "completed": completed}
    if write:
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(existing, text)
        _write_atomic(run.stages_file, json.dumps(marker, indent=2) + "\n")
    return marker


def run_stages(config: StagedConfig, out: str | Path, *, resume: bool = False, progress: bool = True,
               callbacks: tuple[StepCallback, ...] = (), announce: Callable[[str], None] | None = None) -> dict:
    """Train the stages in order into RUN/<name>/, skipping completed ones and resuming an interrupted
    one. Returns `{"stopped", "stages": [{name, step, best_miou, samples, resumed, skipped}], "final"}`."""
    out = Path(out)
    rank, _ = init_distributed(config.train.device)
    # RUN has one writer, as each stage's folder has (its trainer locks RUN/<name>): `core/lock.py`.
    with FolderLock(out, "staged run folder") if rank == 0 else contextlib.nullcontext():
        return _train_stages(config, out, rank, resume, progress, callbacks, announce)


def _train_stages(config: StagedConfig, out: Path, rank: int, resume: bool, progress: bool,
                  callbacks: tuple[StepCallback, ...], announce: Callable[[str], None] | None) -> dict:
    marker = prepare(config, out, resume, write=rank == 0)
    barrier()  # the marker is written before any rank reads a stage
    say = announce if announce is not None and rank == 0 else (lambda text: None)
    results: list[dict] = []
    plan = stage_configs(config, out)
    for position, (name, stage_config) in enumerate(plan, start=1):
        if name in marker["completed"]:
            say(f"[{position}/{len(plan)}] {name}: complete, skipped")
            results.append({"name": name, "skipped": True})
            continue
        stage_dir = RunDir(out).stage(name)
        resumed = stage_dir.last.is_file()
        with Trainer(stage_config, stage_dir.path, resume=resumed, progress=progress, callbacks=callbacks) as trainer:
            data = stage_config.data
            say(f"[{position}/{len(plan)}] {name}: {len(trainer.train_set)} training samples ({data.sampling}"
                f"{', balanced' if data.balance else ''}), {trainer.total_steps} iterations"
                f"{f', resumed at {trainer.step}' if resumed else ''} → {stage_dir}")
            result = trainer.run()
        barrier()  # rank 0 has saved last.pt, which the next stage starts from
        results.append({"name": name, "step": result["step"], "best_miou": result["best_miou"],
                        "samples": len(trainer.train_set), "resumed": resumed, "skipped": False})
        if result["stopped"]:
            return {"stopped": True, "stages": results, "final": out / marker["final"]}
        marker["completed"].append(name)
        if rank == 0:
            _write_atomic(RunDir(out).stages_file, json.dumps(marker, indent=2) + "\n")
    return {"stopped": False, "stages": results, "final": out / marker["final"]}
