"""The single-skip-connection study as a sweep: no-skip plus every tap × n, one run folder each.

A sweep config is a run config (model must be `skipnet`) plus a `sweep:` section (`SweepSection`).
`skipseg sweep CONFIG --out DIR` lays out

    DIR/sweep.yaml     the resolved sweep config (every process of the sweep reads this one)
    DIR/plan.json      the runs: name, tap label (number or name), tap module, n
    DIR/runs/NAME/     one run folder each (separate mode) or DIR/runs/probe/ (probe mode)
    DIR/report/        Tables 1-3 (Markdown and CSV) and the per-class score maps

A run is complete when its `metrics.json` (the final evaluation on the whole val split) exists;
started again, a sweep skips complete runs and resumes interrupted ones from `last.pt`. With
`--shard i/N` a process takes the runs whose position in the plan is i modulo N, so N jobs (or
machines sharing DIR, or each with its own DIR later merged by `--collect`) split the sweep.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from skipseg.config import Config, config_to_dict, file_holds, load_config
from skipseg.core.rundir import PROBE_RUN, SweepDir
from skipseg.engine.evaluator import evaluate_model
from skipseg.engine.probe import ProbeTrainer, evaluate_heads
from skipseg.engine.trainer import Trainer
from skipseg.errors import SkipsegError
from skipseg.models.probe import HeadSpec



@dataclass
class CompareRun:
    """Another system for Table 3: a label and a run folder, an evaluate output folder or a metrics.json."""

    name: str = ""
    run: str = ""


@dataclass
class SweepSection:
    mode: str = "separate"  # separate: one training per configuration | probe: all heads in one
    taps: list[str] | None = None  # numbers, module names, "none"; null = none + every numbered tap
    kernels: list[int] = field(default_factory=lambda: [3, 5, 7])  # numeric ranges: config.RANGES["sweep.*"]
    compare: list[CompareRun] = field(default_factory=list)
    published: bool = False  # Table 3 also lists the paper's published rows (VOC 2012 test), marked so
    score_map_images: list[str] | None = None  # val image ids for the score maps; null = the first few
    score_map_count: int = 3  # how many when not listed (0: no score maps)


@dataclass
class SweepConfig(Config):
    sweep: SweepSection = field(default_factory=SweepSection)


@dataclass(frozen=True)
class PlannedRun:
    """One configuration of the sweep: run name, tap label ("6", or a module name), module, n."""

    name: str
    label: str | None
    tap: str | None
    kernel: int | None


def load_sweep_config(path: str | Path, overrides: list[str] = ()) -> SweepConfig:
    """The sweep config at `path` with `overrides`, every key checked (the model's options too)."""
    from skipseg.models.registry import check_model_config

    config = load_config(path, overrides, cls=SweepConfig)
    where = f"{path}{' + overrides' if overrides else ''}"
    if config.model.name != "skipnet":
        raise SkipsegError(f"{where}: key 'model.name' must be skipnet for a sweep, got {config.model.name!r}")
    check_model_config(config, where)  # after the name: another model's options would hide that error
    if config.sweep.mode not in ("separate", "probe"):
        raise SkipsegError(f"{where}: key 'sweep.mode' must be separate or probe, got {config.sweep.mode!r}")
    if not config.sweep.kernels:  # each one's range (odd, >= 1) is checked at load (config.RANGES)
        raise SkipsegError(f"{where}: key 'sweep.kernels' must list at least one odd size >= 1, got []")
    for i, entry in enumerate(config.sweep.compare):
        if not entry.name or not entry.run:
            raise SkipsegError(f"{where}: key 'sweep.compare[{i}]' needs a name and a run")
    return config


def tap_list(config: Config) -> tuple[list[str], str]:
    """The numbered taps and the top of the config's model."""
    from skipseg.models.registry import resolved_options
    from skipseg.models.skipnet import resolve_taps

    options = resolved_options(config.model)
    return resolve_taps(options["backbone"], options["tap_names"], options["top"], options["width"])


def expand(config: SweepConfig) -> list[PlannedRun]:
    """The plan: "none" once (n does not apply), every other tap once per n."""
    from skipseg.models.skipnet import resolve_tap

    names, _ = tap_list(config)
    entries = config.sweep.taps if config.sweep.taps is not None else ["none", *map(str, range(1, len(names) + 1))]
    plan: list[PlannedRun] = []
    for entry in entries:
        label, tap = resolve_tap(entry, names)
        if tap is None:
            plan.append(PlannedRun("noskip", None, None, None))
            continue
        safe = label.replace(".", "-").replace("/", "-")
        plan.extend(PlannedRun(f"tap{safe}_k{n}", label, tap, n) for n in config.sweep.kernels)
    seen = [r.name for r in plan]
    duplicates = sorted({n for n in seen if seen.count(n) > 1})
    if duplicates:
        raise SkipsegError(f"sweep.taps: {duplicates[0]} is listed twice")
    return plan


def run_config(config: SweepConfig, run: PlannedRun) -> Config:
    """The plain run config of one planned run: the sweep's model with the run's tap and n."""
    options = {**config.model.options, "tap": run.label or "none"}
    if run.kernel is not None:  # the no-skip run has no n: the config's (or the default) stays
        options["kernel"] = run.kernel
    return Config(model=dataclasses.replace(config.model, options=options), data=config.data, train=config.train)


def parse_shard(text: str | None) -> tuple[int, int]:
    """"i/N" → (i, N) with 0 <= i < N; None → (0, 1)."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise SkipsegError(f"--shard {text}: expected i/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise SkipsegError(f"--shard {text}: expected 0 <= i < N (shards are numbered from 0)")
    return i, n


def shard(plan: list[PlannedRun], index: int, count: int) -> list[PlannedRun]:
    return [run for position, run in enumerate(plan) if position % count == index]


def prepare(config: SweepConfig, out: str | Path) -> list[PlannedRun]:
    """Write DIR/sweep.yaml and DIR/plan.json (or check that DIR holds this very sweep)."""
    sweep = SweepDir(out)
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    existing = sweep.config
    if existing.is_file() and not file_holds(existing, config):
        raise SkipsegError(f"{out}: holds a sweep of another config (see {existing}); choose another --out")
    plan = expand(config)
    names, top = tap_list(config)
    sweep.path.mkdir(parents=True, exist_ok=True)
    if not existing.is_file():
        _write_atomic(existing, text)
    _write_atomic(sweep.plan, json.dumps({"mode": config.sweep.mode, "tap_names": names, "top": top,
                                                 "runs": [dataclasses.asdict(r) for r in plan]}, indent=2))
    return plan


def read_plan(out: str | Path) -> tuple[SweepConfig, list[PlannedRun]]:
    sweep = SweepDir(out)
    if not sweep.plan.is_file():
        raise SkipsegError(f"{out}: not a sweep folder (no {SweepDir.plan.name})")
    plan = [PlannedRun(**r) for r in json.loads(sweep.plan.read_text())["runs"]]
    return load_sweep_config(sweep.config), plan


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # shards may write at once
    tmp.write_text(text)
    os.replace(tmp, path)


class _SweepTrainer(Trainer):
    """Keeps its last validation, which at the last step is the final evaluation of the run."""

    final_scores: dict | None = None

    def validate(self) -> dict:
        self.final_scores = super().validate()
        return self.final_scores


def _train(trainer: Trainer) -> tuple[dict | None, dict]:
    """Run a trainer; (result or None if stopped, {train_seconds, train_cpu_seconds}). CPU seconds
    (this process, all threads) compare runs fairly on a machine shared with other work."""
    start, cpu = time.perf_counter(), time.process_time()
    result = trainer.run()
    seconds = {"train_seconds": time.perf_counter() - start, "train_cpu_seconds": time.process_time() - cpu}
    return (None if result["stopped"] else result), seconds


def run_separate(config: SweepConfig, run: PlannedRun, out: str | Path, progress: bool = True) -> dict | None:
    """Train and evaluate one planned run (resuming it if interrupted); its metrics, or None if stopped."""
    run_dir = SweepDir(out).run(run.name)
    if run_dir.is_complete:
        return json.loads(run_dir.scores.read_text())
    resume = run_dir.last.is_file()
    with _SweepTrainer(run_config(config, run), run_dir.path, resume=resume, progress=progress) as trainer:
        result, seconds = _train(trainer)
        if result is None:
            return None
        scores = trainer.final_scores
        if scores is None or config.train.max_val_images is not None:  # the last validation saw a subset
            scores = evaluate_model(trainer.model, trainer.val_set, trainer.runtime, batch_size=config.train.batch_size,
                                    workers=config.data.workers, class_names=trainer.val_set.class_names,
                                    progress=progress)
        metrics = {**scores, **dataclasses.asdict(run), "iterations": trainer.step, **seconds, "resumed": resume}
        if trainer.runtime.is_main:
            _write_atomic(run_dir.scores, json.dumps(metrics, indent=2) + "\n")
    return metrics


def run_probe(config: SweepConfig, plan: list[PlannedRun], out: str | Path, progress: bool = True) -> dict | None:
    """Train every planned configuration's head at once on the frozen backbone (`probe.py`)."""
    run_dir = SweepDir(out).run(PROBE_RUN)
    if run_dir.is_complete:
        return json.loads(run_dir.scores.read_text())
    heads = [HeadSpec(r.name, r.tap, r.kernel) for r in plan]
    resume = run_dir.last.is_file()
    base = Config(model=config.model, data=config.data, train=config.train)
    with ProbeTrainer(base, run_dir.path, heads, resume=resume, progress=progress) as trainer:
        result, seconds = _train(trainer)
        if result is None:
            return None
        scores = trainer.last_scores
        if scores is None or config.train.max_val_images is not None:
            scores = evaluate_heads(trainer.model, trainer.val_set, trainer.runtime,
                                    batch_size=config.train.batch_size, workers=config.data.workers, progress=progress)
        runs = {r.name: dataclasses.asdict(r) for r in plan}
        metrics = {"heads": {name: {**s, **runs[name]} for name, s in scores.items()}, "iterations": trainer.step,
                   **seconds, "resumed": resume}
        if trainer.runtime.is_main:
            _write_atomic(run_dir.scores, json.dumps(metrics, indent=2) + "\n")
    return metrics


def records(dirs: list[Path], plan: list[PlannedRun], mode: str) -> tuple[list[dict], list[str]]:
    """Every planned run's final metrics found in `dirs` (the first folder holding it wins), and the
    names of the runs found nowhere."""
    found: dict[str, dict] = {}
    for folder in dirs:
        if mode == "probe":
            path = SweepDir(folder).run(PROBE_RUN).scores
            if path.is_file():
                for name, scores in json.loads(path.read_text())["heads"].items():
                    found.setdefault(name, scores)
        else:
            for run in plan:
                path = SweepDir(folder).run(run.name).scores
                if run.name not in found and path.is_file():
                    found[run.name] = json.loads(path.read_text())
    return [found[r.name] for r in plan if r.name in found], [r.name for r in plan if r.name not in found]


def pending(plan: list[PlannedRun], mode: str, shard_index: int = 0, shard_count: int = 1) -> list[PlannedRun]:
    """This shard's share of the plan (probe mode: the whole plan is one run, shard 0's)."""
    if mode == "probe":
        return plan if shard_index == 0 else []
    return shard(plan, shard_index, shard_count)


def run_jobs(out: Path, runs: list[PlannedRun], jobs: int) -> list[str]:
    """Run separate-mode runs `jobs` at a time, each in its own process (`skipseg sweep DIR/sweep.yaml
    --only NAME`), CPU threads split between them; returns the names of runs that failed."""
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}

    def one(run: PlannedRun) -> str | None:
        run_dir = SweepDir(out).run(run.name)
        run_dir.path.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "skipseg", "sweep", str(SweepDir(out).config), "--out", str(out),
                   "--only", run.name, "--no-progress"]
        with run_dir.sweep_log.open("a") as log:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        return None if code == 0 and run_dir.is_complete else run.name

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return [name for name in pool.map(one, runs) if name is not None]
