"""Reports: Tables 1-3 of the skip study (`tables`), score maps (`score_maps`), and the whole report
of runs, evaluations and sweeps as one self-contained HTML page plus Markdown (`build`).

    from skipseg.report import write_report, headline_table
    page = write_report(["runs/fcn8s", "eval/edeconvnet", "sweeps/skip"], "report", samples=4)
    print(headline_table(["runs/fcn8s", "eval/edeconvnet", "sweeps/skip"]))

Imports are deferred so that `skipseg.report.tables` stays light (no matplotlib, no models).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

__all__ = ["headline_table", "write_report"]


def write_report(paths: Sequence[str | Path], out: str | Path, samples: int = 4, data: str | Path | None = None,
                 split: str | None = None, device: str = "auto") -> Path:
    """OUT/report.html (self-contained) and OUT/report.md from runs, evaluations and sweeps; returns
    the path of report.html. See `skipseg.report.build.write_report`."""
    from skipseg.report.build import write_report as write

    return write(paths, out, samples=samples, data=data, split=split, device=device)


def headline_table(paths: Sequence[str | Path]) -> str:
    """The comparison table (one row per evaluated system) as Markdown; nothing is written."""
    from skipseg.report.build import headline_table as table

    return table(paths)
