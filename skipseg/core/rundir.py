"""The layout of run folders and sweep folders, in one place.

    RUN/config.yaml          the resolved config (reloadable); RUN/meta.json: provenance
    RUN/metrics.csv          the logbook: a row per log interval and per validation
    RUN/metrics.json         the final evaluation on the whole val split (a sweep's runs, `evaluate --out`)
    RUN/checkpoints/         last.pt (resume) and best.pt (best validation)
    RUN/stages.json          a staged run: RUN/<stage>/ are its stages' run folders; it stands for the final one
    RUN/stages.yaml          a staged run's resolved config
    RUN/probe.json           a probe run's heads
    RUN/proposals/           cached proposals of DeconvNet's stage-2 crops
    RUN/eval/                the run's own evaluation (`skipseg evaluate RUN --out RUN/eval`)
    RUN/tensorboard/         TensorBoard scalars
    RUN/sweep.log            a sweep run's output, when `--jobs` ran it in its own process

    SWEEP/sweep.yaml         the resolved sweep config; SWEEP/plan.json: its runs
    SWEEP/runs/NAME/         each run's folder (probe mode: runs/probe/)
    SWEEP/report/            Tables 1-3 and the score maps
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from skipseg.errors import SkipsegError


class _Entry:
    """A fixed name inside the folder: `run.config` is `RUN/config.yaml`; `RunDir.config.name` the name."""

    def __init__(self, name: str, doc: str) -> None:
        self.name, self.__doc__ = name, doc

    def __get__(self, folder, owner=None):
        return self if folder is None else folder.path / self.name


@dataclass(frozen=True)
class _Folder:
    """A folder of a known layout; `str()` is its path."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    def __str__(self) -> str:
        return str(self.path)


class RunDir(_Folder):
    """A training run's folder (`skipseg train --out`, a sweep's `runs/NAME`)."""

    config = _Entry("config.yaml", "the resolved config")
    meta = _Entry("meta.json", "provenance: commit, versions, argv")
    log = _Entry("metrics.csv", "the logbook")
    scores = _Entry("metrics.json", "the final evaluation")
    checkpoints = _Entry("checkpoints", "the checkpoint folder")
    stages_file = _Entry("stages.json", "a staged run's marker")
    stages_config = _Entry("stages.yaml", "a staged run's resolved config")
    probe_file = _Entry("probe.json", "a probe run's heads")
    proposals = _Entry("proposals", "cached stage-2 proposals")
    tensorboard = _Entry("tensorboard", "TensorBoard scalars")
    evaluation = _Entry("eval", "where the run's own `skipseg evaluate` wrote its metrics.json")
    sweep_log = _Entry("sweep.log", "a sweep run's output when run in its own process")

    def checkpoint(self, name: str = "last.pt") -> Path:
        return self.checkpoints / name

    @property
    def last(self) -> Path:
        """The checkpoint a run resumes from."""
        return self.checkpoint("last.pt")

    @property
    def is_complete(self) -> bool:
        """Whether the run's final evaluation is written (what a sweep resumes by)."""
        return self.scores.is_file()

    @property
    def scores_anywhere(self) -> tuple[Path, Path]:
        """Where a final evaluation of this run may be: RUN/metrics.json, RUN/eval/metrics.json."""
        return self.scores, RunDir(self.evaluation).scores

    def stage(self, name: str) -> RunDir:
        return RunDir(self.path / name)

    def read_stages(self) -> dict | None:
        """The `stages.json` marker of a staged run folder ({"stages": [names in order], "final":
        name, "completed": [names]}), or None for any other folder."""
        marker = self.stages_file
        if not marker.is_file():
            return None
        try:
            stages = json.loads(marker.read_text())
            if not isinstance(stages["final"], str) or not isinstance(stages["stages"], list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise SkipsegError(f"{marker}: not a readable staged-run marker") from None
        return stages

    def final(self) -> RunDir:
        """This folder; a staged run's folder: its final stage's run folder (`RUN/<final>`)."""
        stages = self.read_stages()
        return self if stages is None else self.stage(stages["final"])

    def holds_run(self) -> bool:
        """Whether a training run (or a staged one) was started here."""
        return self.config.is_file() or self.checkpoints.is_dir() or self.stages_file.is_file()


PROBE_RUN = "probe"  # the run folder of a probe-mode sweep: every head in one run


class SweepDir(_Folder):
    """A sweep's folder (`skipseg sweep --out`)."""

    config = _Entry("sweep.yaml", "the resolved sweep config")
    plan = _Entry("plan.json", "the sweep's runs")
    runs = _Entry("runs", "the run folders")
    report = _Entry("report", "Tables 1-3 and the score maps")

    def run(self, name: str) -> RunDir:
        return RunDir(self.runs / name)


def completed_run(sweeps: Sequence[str | Path], name: str) -> RunDir:
    """Run `name` in the first of a sweep's folders (its shards) where it is complete."""
    for folder in sweeps:
        run = SweepDir(folder).run(name)
        if run.is_complete:
            return run
    raise SkipsegError(f"{', '.join(map(str, sweeps))}: no complete run {name!r}")
