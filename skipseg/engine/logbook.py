"""Run logs on rank 0: `metrics.csv` (one row per log interval and per validation) and TensorBoard."""
from __future__ import annotations

import csv
from pathlib import Path

from skipseg.core.rundir import RunDir

COLUMNS = ("iteration", "split", "loss", "lr", "images_per_s", "pixel_acc", "mean_acc", "mean_iou", "fw_iou", "top1",
           "cross_entropy")


class Logbook:
    """Appends rows to RUN/metrics.csv and scalars to RUN/tensorboard; on resume, rows past the
    checkpoint's iteration (written after it, then lost in a crash) are dropped first."""

    def __init__(self, run_dir: str | Path, resume_step: int | None = None, tensorboard: bool = True) -> None:
        self.path = RunDir(run_dir).log
        if resume_step is not None and self.path.exists():
            with self.path.open() as handle:
                rows = [row for row in csv.DictReader(handle) if int(row["iteration"]) <= resume_step]
            self._write(rows, mode="w")
        elif not self.path.exists() or resume_step is None:
            self._write([], mode="w")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(RunDir(run_dir).tensorboard), purge_step=resume_step)

    def _write(self, rows: list[dict], mode: str) -> None:
        with self.path.open(mode, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            if mode == "w":
                writer.writeheader()
            for row in rows:
                writer.writerow({key: row.get(key, "") for key in COLUMNS})

    def log(self, iteration: int, split: str, **values: float) -> None:
        self._write([{"iteration": iteration, "split": split, **values}], mode="a")
        if self.writer is not None:
            for key, value in values.items():
                if value is not None and value != "":
                    self.writer.add_scalar(f"{split}/{key}", value, iteration)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(run_dir: str | Path) -> list[dict]:
    """metrics.csv as dicts with numbers converted (empty cells → None)."""
    with RunDir(run_dir).log.open() as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for row in rows:
        parsed: dict = {"iteration": int(row["iteration"]), "split": row["split"]}
        for key in COLUMNS[2:]:
            parsed[key] = float(row[key]) if row.get(key) not in (None, "") else None
        out.append(parsed)
    return out
