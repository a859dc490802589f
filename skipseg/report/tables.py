"""Tables 1-3 of the skip study as Markdown and CSV, from the runs' final metrics (`report.study`
merges a sweep's run folders into them).

Table 1: mIoU per connection (its best n), with the validation cross-entropy (nats per cell or pixel;
not in the paper: it still ranks heads whose argmax has not left the class prior). Table 2
(and 2b, the cross-entropy): mIoU per connection and n. Table 3: the best
configuration next to other systems (background IoU and mean IoU), read from their run folders.
Rows follow the paper: no connection first, then the taps from the top down. All figures are
percentages of the whole-val-split scores (`metrics.py`); a run not (yet) found shows "—".
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

from skipseg.core.rundir import RunDir
from skipseg.errors import SkipsegError

Table = tuple[list[str], list[list[str]]]
MISSING = "—"


def pct(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.2f}"


def background_iou(scores: dict) -> float | None:
    """IoU of the class named "background" (else class 0)."""
    names, ious = scores.get("class_names") or [], scores.get("per_class_iou") or []
    index = names.index("background") if "background" in names else 0
    return ious[index] if index < len(ious) else None


def _order(labels: Sequence[str | None]) -> list[str | None]:
    """No connection first, then numbered taps from the highest down, then named taps as planned."""
    numbered = sorted({lb for lb in labels if lb is not None and lb.isdigit()}, key=int, reverse=True)
    named = list(dict.fromkeys(lb for lb in labels if lb is not None and not lb.isdigit()))
    return ([None] if None in labels else []) + numbered + named


def _connection(label: str | None) -> str:
    return "No connection" if label is None else label


def _rank(rec: dict) -> tuple[float, float]:
    """Higher is better: mean IoU, then (on ties, e.g. every head still at the class prior) the lower
    validation cross-entropy."""
    ce = rec.get("cross_entropy")
    return (rec.get("mean_iou") or -1.0, -ce if ce is not None else float("-inf"))


def best_by_tap(records: Sequence[dict]) -> dict[str | None, dict]:
    """For each tap label, the record of its best n (by mean IoU, ties by cross-entropy)."""
    best: dict[str | None, dict] = {}
    for rec in records:
        label, current = rec.get("label"), best.get(rec.get("label"))
        if current is None or _rank(rec) > _rank(current):
            best[label] = rec
    return best


def nats(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4f}"


def table1(records: Sequence[dict], labels: Sequence[str | None]) -> Table:
    best = best_by_tap(records)
    rows = []
    for label in _order(labels):
        rec = best.get(label, {})
        n = rec.get("kernel") if label is not None and rec else None
        rows.append([_connection(label), rec.get("tap") or ("top only" if label is None else MISSING),
                     str(n) if n else MISSING, pct(rec.get("mean_iou")), pct(background_iou(rec) if rec else None),
                     nats(rec.get("cross_entropy"))])
    return ["Connection", "Tap", "best n", "mIoU", "Background IoU", "val cross-entropy"], rows


def table2(records: Sequence[dict], labels: Sequence[str | None], kernels: Sequence[int],
           key: str = "mean_iou") -> Table:
    """`key` (mean_iou as %, or cross_entropy in nats) per connection and n."""
    show = nats if key == "cross_entropy" else pct
    by_key = {(r.get("label"), r.get("kernel")): r for r in records}
    taps = {r.get("label"): r.get("tap") for r in records}
    rows = []
    for label in _order(labels):
        if label is None:  # n does not apply: the same figure in every column
            value = show(by_key.get((None, None), {}).get(key))
            rows.append([_connection(None), "top only", *([value] * len(kernels))])
        else:
            rows.append([label, taps.get(label) or MISSING,
                         *(show(by_key.get((label, k), {}).get(key)) for k in kernels)])
    return ["Connection", "Tap", *(f"n = {k}" for k in kernels)], rows


def compare_metrics(path: str | Path) -> dict:
    """`{mean_iou, background}` of another system: a metrics.json file, a folder holding one (a run of
    this sweep, `skipseg evaluate --out`), or a training run's metrics.csv (last validation; its
    background IoU is not logged there)."""
    path = Path(path)
    candidates = [path] if path.is_file() else list(RunDir(path).scores_anywhere)
    for candidate in candidates:
        if candidate.is_file() and candidate.suffix == ".json":
            scores = json.loads(candidate.read_text())
            return {"mean_iou": scores.get("mean_iou"), "background": background_iou(scores), "source": str(candidate)}
    run = RunDir(path).final() if path.is_dir() else RunDir(path)  # a staged run: its final stage
    if run.log.is_file():
        from skipseg.engine.logbook import read_metrics

        val = [row for row in read_metrics(run.path) if row["split"] == "val"]
        if val:
            return {"mean_iou": val[-1]["mean_iou"], "background": None, "source": str(run.log)}
    raise SkipsegError(f"{path}: no metrics.json (run `skipseg evaluate RUN --out {path}`) or validated metrics.csv")


# The paper's Table 3 (Yim & Sohn 2017; VOC 2012 test for the others): (method, background IoU, mIoU).
PUBLISHED = (
    ("Inception-v3, single skip (published)", 89.7, 39.9),
    ("Hypercolumn (published)", 88.9, 59.2),
    ("DeconvNet (published)", 92.7, 69.6),
    ("FCN-8s (published)", 91.2, 62.2),
)


def table3(records: Sequence[dict], method: str, compare: Sequence[tuple[str, str]],
           eval_ids: set[str] | None = None, method_scored_on: str = "cells", published: bool = False,
           method_train_ids: set[str] | None = None) -> Table:
    """The best configuration, then each compared system (with how many of the evaluation images it
    trained on: `overlap.training_ids`), then optionally the paper's published rows (never "best")."""
    from skipseg.report.overlap import overlap_count, scored_on, training_ids

    def count(trained: set[str] | None) -> str:
        found = overlap_count(trained, eval_ids)
        return MISSING if found is None else str(found)

    rows = []
    if records:
        best = max(records, key=_rank)
        which = "no connection" if best.get("label") is None else f"tap {best['label']}, n = {best['kernel']}"
        rows.append([f"{method} ({which})", method_scored_on, count(method_train_ids), pct(background_iou(best)),
                     pct(best.get("mean_iou"))])
    for name, run in compare:
        try:
            found = compare_metrics(run)
        except SkipsegError:  # not trained or evaluated yet: the table still comes out
            rows.append([f"{name} (no metrics in {run})", MISSING, MISSING, MISSING, MISSING])
            continue
        overlap = count(training_ids(run))
        if overlap not in (MISSING, "0"):
            name = f"{name} (not comparable: trained on {overlap} of the {len(eval_ids or ())} evaluation images)"
        rows.append([name, scored_on(run), overlap, pct(found["background"]), pct(found["mean_iou"])])
    if published:
        rows += [[name, "pixels", MISSING, f"{bg:.2f}", f"{miou:.2f}"] for name, bg, miou in PUBLISHED]
    return ["Method", "Scored on", "Trained on eval images", "Background", "Mean IoU"], rows


def markdown(table: Table) -> str:
    header, rows = table
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def write_csv(path: Path, table: Table) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(table[0])
        writer.writerows(table[1])


CAPTIONS = {
    "table1": "Table 1. mIoU (%) per connection, each with its best filter size n.",
    "table2": "Table 2. mIoU (%) per connection and filter size n.",
    "table2_ce": "Table 2b. Validation cross-entropy (nats per cell or pixel) per connection and filter size n "
                 "(not in the paper; lower is closer to the labels).",
    "table3": "Table 3. Comparison with other methods (IoU, %). \"Scored on\": cells = the mIoU over the G×G "
              "grid's majority labels (box-wise), pixels = over pixels; the two are not the same measure. "
              "\"Trained on eval images\": how many of the evaluation split's images the system trained on "
              "(by id, from its run configs; — = unknown). Published rows: the paper's, VOC 2012 test.",
}


def write_tables(records: Sequence[dict], labels: Sequence[str | None], kernels: Sequence[int], method: str,
                 compare: Sequence[tuple[str, str]], out_dir: str | Path, note: str = "",
                 eval_ids: set[str] | None = None, method_scored_on: str = "cells",
                 published: bool = False, method_train_ids: set[str] | None = None) -> dict[str, Path]:
    """table1/2/2_ce/3 `.md` and `.csv` and `tables.md` (all of them) in `out_dir`; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = {"table1": table1(records, labels), "table2": table2(records, labels, kernels),
              "table2_ce": table2(records, labels, kernels, key="cross_entropy"),
              "table3": table3(records, method, compare, eval_ids, method_scored_on, published, method_train_ids)}
    paths: dict[str, Path] = {}
    sections = [f"# Single-skip-connection study: {method}", note]
    for name, table in tables.items():
        text = f"{CAPTIONS[name]}\n\n{markdown(table)}\n"
        (out_dir / f"{name}.md").write_text(text)
        write_csv(out_dir / f"{name}.csv", table)
        paths[name] = out_dir / f"{name}.md"
        sections.append(text)
    (out_dir / "tables.md").write_text("\n\n".join(s for s in sections if s) + "\n")
    paths["tables"] = out_dir / "tables.md"
    return paths
