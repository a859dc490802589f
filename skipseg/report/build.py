"""`write_report(paths, out)`: runs, evaluations and sweeps → OUT/report.html (self-contained) and
OUT/report.md (the tables). `headline_table(paths)`: the comparison as Markdown, nothing written.

Sections: the comparison (summary figures, per-class IoU), the skip study (Tables 1-3 and score
maps of each sweep, through `study.collect`, written to OUT/sweeps/), training curves, the
confusion matrix of the best system, sample predictions, and notes on anything left out.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Sequence

from skipseg.report.collect import Inputs, System, gather
from skipseg.report.html import Figure, Section, TableBlock, Text, render_html, render_markdown
from skipseg.report.tables import CAPTIONS, MISSING, Table, markdown, pct

TITLE = "skipseg report"


def comparison_table(systems: Sequence[System]) -> Table:
    """One row per system: mIoU, pixel accuracy, mean accuracy, frequency-weighted IoU (%), images."""
    rows = []
    for system in systems:
        s = system.scores
        images = s.get("num_images")
        rows.append([system.label, pct(s.get("mean_iou")), pct(s.get("pixel_acc")), pct(s.get("mean_acc")),
                     pct(s.get("fw_iou")), MISSING if images is None else str(images)])
    return ["System", "mIoU", "pixel acc.", "mean acc.", "fw IoU", "images"], rows


def per_class_table(systems: Sequence[System]) -> Table | None:
    """IoU (%) per class (rows, matched by name) and system (columns); None if no system has them."""
    scored = [s for s in systems if s.scores.get("per_class_iou") and s.scores.get("class_names")]
    if not scored:
        return None
    names = list(dict.fromkeys(n for s in scored for n in s.scores["class_names"]))
    values = [dict(zip(s.scores["class_names"], s.scores["per_class_iou"])) for s in scored]
    rows = [[name, *(pct(v.get(name)) for v in values)] for name in names]
    rows = [row for row in rows if any(cell != MISSING for cell in row[1:])]  # absent from every evaluation
    return ["Class", *(s.label for s in scored)], rows


def headline_table(paths: Sequence[str | Path] | Inputs) -> str:
    """The comparison table as Markdown (what `skipseg report` and the demo print)."""
    inputs = paths if isinstance(paths, Inputs) else gather(paths)
    return markdown(comparison_table(inputs.systems))


def _read_csv(path: Path) -> Table:
    with path.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    return header, rows


def _existing_score_maps(dirs: Sequence[Path]) -> list[Path] | None:
    """The score maps a sweep's own report already holds for each connection's best n, if all are there."""
    from skipseg.engine.sweep import read_plan, records
    from skipseg.report.tables import best_by_tap

    config, plan = read_plan(dirs[0])
    found, _ = records(list(dirs), plan, config.sweep.mode)
    paths = []
    for rec in best_by_tap(found).values():
        path = next((d / "report" / "score_maps" / f"{rec['name']}.png" for d in dirs
                     if (d / "report" / "score_maps" / f"{rec['name']}.png").is_file()), None)
        if path is None:
            return None
        paths.append(path)
    return paths


def sweep_section(dirs: Sequence[Path], out: Path, index: int) -> Section:
    """Tables 1-3 and the score maps of one sweep (its shards merged)."""
    from skipseg.report.study import collect

    existing = _existing_score_maps(dirs)
    result = collect(list(dirs), out / "sweeps" / f"{index}_{dirs[0].name}", score_maps=existing is None)
    total = len(result["found"]) + len(result["missing"])
    note = (f"Sweep {', '.join(map(str, dirs))}: {len(result['found'])} of {total} configurations finished"
            + (f" (missing: {', '.join(result['missing'])})" if result["missing"] else "")
            + f"; training {result['train_seconds']:.1f} s wall, {result['train_cpu_seconds']:.1f} s CPU.")
    blocks = [Text(note)]
    for name in CAPTIONS:
        blocks.append(TableBlock(CAPTIONS[name], _read_csv(result["report"] / f"{name}.csv")))
    for path in existing if existing is not None else result["score_maps"]:
        blocks.append(Figure(f"Per-class score maps z, {path.stem} (image, ground truth, prediction, then one "
                             "map per class on a shared scale)", path.read_bytes()))
    return Section(f"sweep-{index}", f"Skip study: {dirs[0].name}", blocks)


def write_report(paths: Sequence[str | Path], out: str | Path, samples: int = 4, data: str | Path | None = None,
                 split: str | None = None, device: str = "auto") -> Path:
    """Write OUT/report.html and OUT/report.md from training runs, evaluations and sweep folders;
    returns the path of report.html. `samples` images of the split (0: none) get predicted by every
    system; `data`/`split` override where they come from (default: the runs' val split)."""
    from skipseg.config import git_commit
    from skipseg.report.figures import confusion_figure, curves_figure
    from skipseg.report.samples import sample_panels

    inputs = gather(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes = list(inputs.notes)
    comparison = Section("comparison", "Comparison", [TableBlock(
        "Scores (%) on the whole evaluated split, one confusion matrix per system (bold: best).",
        comparison_table(inputs.systems), best="column", plain=(5,))])
    per_class = per_class_table(inputs.systems)
    if per_class is not None:
        comparison.blocks.append(TableBlock("IoU (%) per class (bold: best system for the class; classes "
                                            "absent from every evaluation left out).", per_class, best="row"))
    sections = [comparison, *(sweep_section(dirs, out, i + 1) for i, dirs in enumerate(inputs.sweeps))]
    curves = curves_figure(inputs.runs)
    if curves is not None:
        sections.append(Section("curves", "Training curves", [Figure(
            "Training loss (mean per log interval) and validation mIoU against the iteration, from each "
            "run's metrics.csv.", curves)]))
    with_matrix = [s for s in inputs.systems if s.scores.get("confusion") and s.scores.get("class_names")]
    if with_matrix:
        best = max(with_matrix, key=lambda s: s.scores.get("mean_iou") or -1.0)
        title = f"{best.label}: mIoU {pct(best.scores.get('mean_iou'))} %"
        sections.append(Section("confusion", "Confusion matrix of the best system", [Figure(
            f"{best.label}, row-normalised: each ground-truth class's pixels split over the predicted classes "
            "(classes neither in the ground truth nor predicted left out).",
            confusion_figure(best.scores["confusion"], best.scores["class_names"], title))]))
    figure, sample_notes = sample_panels(inputs.systems, samples, data, split, device)
    notes += sample_notes
    if figure is not None:
        sections.append(Section("samples", "Sample predictions", [Figure(
            "The first images of the evaluated split: the image, its ground truth and each system's prediction "
            "(VOC colours over the image; background and void uncoloured; box-wise predictions as cells).",
            figure)]))
    sections.append(Section("notes", "Notes", [Text(n) for n in notes]))
    meta = [f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by skipseg (commit {git_commit() or 'unknown'}).",
            "Inputs: " + ", ".join(map(str, paths)) + "."]
    (out / "report.md").write_text(render_markdown(TITLE, meta, sections))
    page = out / "report.html"
    page.write_text(render_html(TITLE, meta, sections))
    return page
