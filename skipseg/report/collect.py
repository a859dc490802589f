"""What a report is made of, found by content in the folders it is given.

    sweep folder     plan.json (+ sweep.yaml, runs/NAME/)              `skipseg sweep --out`
    training run     config.yaml + metrics.csv (+ checkpoints/)         `skipseg train --out`, a sweep's runs/NAME
    staged run       stages.json + a run folder per stage               `skipseg train` of a staged config
    evaluation       metrics.json holding "runs"                        `skipseg evaluate --out`

Each evaluation is a row of the comparison (labelled from its "runs" and "inference"). A training
run's row comes from its own evaluation (RUN/eval/metrics.json, or RUN/metrics.json as a sweep
writes it); without one, and when no evaluation given scores that run alone, from the last
validation of its metrics.csv. A staged run is its final stage (as everywhere in skipseg), with the
curves of every stage. A sweep gives its best configuration as a row. Nothing is written.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from skipseg.core.rundir import PROBE_RUN, RunDir, SweepDir, completed_run
from skipseg.errors import SkipsegError

SCORE_KEYS = ("mean_iou", "pixel_acc", "mean_acc", "fw_iou")


@dataclass
class System:
    """One row of the comparison: its scores and what makes its predictions (the mean of its runs'
    probabilities, with the evaluation's inference options)."""

    label: str
    scores: dict
    source: Path
    runs: list[Path] = field(default_factory=list)  # run folders or checkpoint files
    inference: dict = field(default_factory=dict)  # evaluate's flip, scales, proposals, aggregate, crf
    split: str | None = None
    head: str | None = None  # the head of a probe run (a sweep in probe mode)
    proposal_cache: Path | None = None
    prefer: str = "best"  # checkpoint of a run folder: evaluate takes best.pt, a sweep scores last.pt


@dataclass
class TrainingRun:
    """A run's training log (metrics.csv rows, see `engine.logbook.read_metrics`). `loss_scale`
    brings its logged loss to one model's: a probe logs the sum over its heads (1 / heads)."""

    name: str
    folder: Path
    rows: list[dict]
    loss_scale: float = 1.0


@dataclass
class Inputs:
    systems: list[System] = field(default_factory=list)
    runs: list[TrainingRun] = field(default_factory=list)
    sweeps: list[list[Path]] = field(default_factory=list)  # the folders of each sweep (its shards)
    notes: list[str] = field(default_factory=list)  # what could not be shown, and why


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SkipsegError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise SkipsegError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _scores(path: Path) -> dict:
    """A metrics.json with the scores of `metrics.py` (at least mean_iou)."""
    data = read_json(path)
    if "mean_iou" not in data:
        raise SkipsegError(f"{path}: no \"mean_iou\" (not written by skipseg evaluate or a sweep run)")
    return data


def kind_of(path: Path) -> str:
    """"sweep", "run" or "evaluation"; anything else is an error naming the path."""
    if not path.exists():
        raise SkipsegError(f"{path}: no such file or folder")
    if path.is_file():
        if path.name == RunDir.scores.name and "runs" in read_json(path):
            return "evaluation"
        raise SkipsegError(f"{path}: give a folder (training run, `skipseg evaluate --out` or sweep), "
                           "or an evaluation's metrics.json")
    run = RunDir(path)
    if SweepDir(path).plan.is_file():
        return "sweep"
    if run.stages_file.is_file():
        return "run"
    if run.config.is_file() and run.log.is_file():
        return "run"
    if run.scores.is_file():
        if "runs" in read_json(run.scores):
            return "evaluation"
        raise SkipsegError(f"{run.scores}: has no \"runs\" and {path} holds no config.yaml + "
                           "metrics.csv: neither an evaluation nor a training run")
    raise SkipsegError(f"{path}: not a training run (config.yaml + metrics.csv), an evaluation "
                       "(metrics.json with \"runs\") or a sweep folder (plan.json)")


def run_folder(path: Path) -> Path:
    """The run folder of a run folder or of a checkpoint file in RUN/checkpoints/."""
    if path.suffix == ".pt":
        return path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return path


def run_name(path: Path) -> str:
    """A run's name in labels: its folder's; a checkpoint file adds its stem ("fcn8s:last")."""
    if path.suffix == ".pt":
        return f"{run_folder(path).name}:{path.stem}"
    return path.name


def inference_suffix(inference: dict) -> str:
    """" (proposals 50, max, CRF)" from an evaluation's "inference"; "" for plain whole-image inference."""
    parts = []
    if inference.get("proposals"):
        parts.append(f"proposals {inference['proposals']}, {inference.get('aggregate') or 'max'}")
    if inference.get("flip"):
        parts.append("flip")
    scales = inference.get("scales") or [1.0]
    if list(scales) != [1.0]:
        parts.append("scales " + ",".join(f"{s:g}" for s in scales))
    if inference.get("crf"):
        parts.append("CRF")
    return f" ({', '.join(parts)})" if parts else ""


def _resolve(entry: str, base: Path) -> Path:
    """A path from an evaluation's "runs" (relative to where evaluate ran): as written, else relative
    to the evaluation folder or its parent; unchanged when found nowhere."""
    path = Path(entry)
    for candidate in (path, base / path, base.parent / path):
        if candidate.exists():
            return candidate
    return path


def _key(path: Path) -> Path:
    """What identifies a run: its folder (a staged run's: its final stage's), resolved."""
    return RunDir(run_folder(path)).final().path.resolve()


def _inference(scores: dict) -> dict:
    """An evaluation's inference options, with its CRF parameters when recorded."""
    inference = dict(scores.get("inference") or {})
    if scores.get("crf_params"):
        inference["crf_params"] = scores["crf_params"]
    return inference


def evaluation_system(path: Path) -> System:
    """The row of a `skipseg evaluate --out` folder (or its metrics.json)."""
    file = path if path.is_file() else RunDir(path).scores
    scores = _scores(file)
    entries = scores.get("runs")
    if not isinstance(entries, list) or not entries:
        raise SkipsegError(f"{file}: \"runs\" must list the evaluated runs")
    runs = [_resolve(str(e), file.parent) for e in entries]
    inference = _inference(scores)
    label = "+".join(run_name(r) for r in runs) + inference_suffix(inference)
    return System(label, scores, file, runs, inference, scores.get("split"),
                  proposal_cache=RunDir(file.parent).proposals)


def _log(folder: Path) -> list[dict]:
    from skipseg.engine.logbook import read_metrics

    try:
        return read_metrics(folder)
    except (KeyError, ValueError) as exc:
        raise SkipsegError(f"{RunDir(folder).log}: not a skipseg training log ({type(exc).__name__}: {exc})"
                           ) from None


def training_run(path: Path) -> tuple[list[TrainingRun], System | None]:
    """A training run's logs (one per stage of a staged run) and its own evaluation's row (or None)."""
    run = RunDir(path)
    stages = run.read_stages()
    folders = [(path.name, path)] if stages is None else [(f"{path.name}/{n}", path / n) for n in stages["stages"]]
    logs = [TrainingRun(name, folder, _log(folder)) for name, folder in folders if RunDir(folder).log.is_file()]
    final = run.final()
    candidates = (RunDir(run.evaluation).scores, RunDir(final.evaluation).scores, final.scores)
    for file in (f for f in dict.fromkeys(candidates) if f.is_file()):
        scores = _scores(file)
        if len(scores.get("runs") or []) > 1:  # RUN/eval holds an ensemble: label it as one
            return logs, evaluation_system(file)
        entry = _resolve(str(scores["runs"][0]), file.parent) if scores.get("runs") else path
        model = entry if entry.exists() and _key(entry) == _key(path) else path  # e.g. RUN/checkpoints/last.pt
        inference = _inference(scores)
        label = path.name if model == path else run_name(model)
        return logs, System(label + inference_suffix(inference), scores, file, [model], inference,
                            scores.get("split"), proposal_cache=RunDir(file.parent).proposals)
    return logs, None


def last_validation(path: Path, logs: Sequence[TrainingRun]) -> System | None:
    """A row from the last validation logged by the (final stage of the) run: no per-class IoU, no confusion."""
    final = next((log for log in logs if log.folder.resolve() == _key(path)), None)
    val = [row for row in (final.rows if final else []) if row["split"] == "val"]
    if not val:
        return None
    scores = {k: val[-1][k] for k in SCORE_KEYS}
    return System(f"{path.name} (last validation, iteration {val[-1]['iteration']})", scores,
                  RunDir(final.folder).log, [path])


def sweep_best(dirs: Sequence[Path]) -> tuple[System | None, TrainingRun | None]:
    """The best configuration of a sweep as a row, and the log of the run that trained it."""
    from skipseg.engine.sweep import read_plan, records
    from skipseg.models.registry import resolved_options

    config, plan = read_plan(dirs[0])
    mode = config.sweep.mode
    found, _ = records(list(dirs), plan, mode)
    if not found:
        return None, None
    best = max(found, key=lambda r: r.get("mean_iou") or -1)
    which = "no connection" if best.get("label") is None else f"tap {best['label']}, n = {best['kernel']}"
    label = f"skipnet {resolved_options(config.model)['backbone']}: {which}"
    name = PROBE_RUN if mode == "probe" else best["name"]
    run = completed_run(dirs, name)
    system = System(label, best, run.scores, [run.path], split=config.data.val_split,
                    head=best["name"] if mode == "probe" else None, prefer="last")
    log = None
    if run.log.is_file():
        heads = len(plan) if mode == "probe" else 1  # a probe logs the sum of its heads' losses
        suffix = f" (probe: loss per head, mean of {heads}; validation: best head)" if mode == "probe" else ""
        log = TrainingRun(label + suffix, run.path, _log(run.path), 1 / heads)
    return system, log


def _unique(systems: list[System]) -> None:
    """Make labels unique (two runs named alike in different folders): " #2", " #3", ..."""
    seen: dict[str, int] = {}
    for system in systems:
        count = seen[system.label] = seen.get(system.label, 0) + 1
        if count > 1:
            system.label = f"{system.label} #{count}"


def gather(paths: Sequence[str | Path]) -> Inputs:
    """Read every input; errors name the path. Rows keep the order of the inputs; sweep folders of
    the same sweep (its shards) are merged into one."""
    if not paths:
        raise SkipsegError("report: give at least one training run, evaluation or sweep folder")
    inputs = Inputs()
    rows: list[tuple[int, System]] = []
    runs: list[tuple[int, Path, list[TrainingRun], System | None]] = []
    sweeps: dict[str, tuple[int, list[Path]]] = {}
    for position, raw in enumerate(paths):
        path = Path(raw)
        kind = kind_of(path)
        if kind == "sweep":
            sweep = SweepDir(path)
            if not sweep.config.is_file():
                raise SkipsegError(f"{sweep.config}: missing (a sweep folder holds {SweepDir.plan.name} and "
                                   f"{SweepDir.config.name})")
            same_sweep = sweep.plan.read_text() + sweep.config.read_text()
            sweeps.setdefault(same_sweep, (position, []))[1].append(path)
        elif kind == "run":
            runs.append((position, path, *training_run(path)))
        else:
            rows.append((position, evaluation_system(path)))
    scored_alone = {_key(s.runs[0]) for _, s in rows if len(s.runs) == 1}
    for position, path, logs, own in runs:
        inputs.runs.extend(logs)
        if own is None and _key(path) in scored_alone:
            continue  # an evaluation given scores this run: that is its row
        row = own or last_validation(path, logs)
        if row is None:
            inputs.notes.append(f"{path}: no evaluation and no validation logged yet; not in the comparison")
        else:
            rows.append((position, row))
    for position, dirs in sweeps.values():
        inputs.sweeps.append(dirs)
        system, log = sweep_best(dirs)
        if system is None:
            inputs.notes.append(f"{dirs[0]}: no configuration of the sweep has finished yet")
            continue
        rows.append((position, system))
        if log is not None:
            inputs.runs.append(log)
    inputs.systems = [system for _, system in sorted(rows, key=lambda item: item[0])]
    _unique(inputs.systems)
    return inputs
