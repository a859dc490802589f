"""The report's plots (matplotlib, Agg backend), each returned as PNG bytes to embed.

Training curves: the logged training loss (per model: a probe's, the sum over its heads, divided
by their number) and the validation mIoU against the iteration, one line per run, a labelled point for
a run that validated once. Confusion matrix: rows = ground truth normalised to 1 (the fraction of each class's pixels
predicted as each class), so a rare class reads as clearly as a frequent one.
"""
from __future__ import annotations

import io
import textwrap
from typing import Sequence

import numpy as np

from skipseg.report.collect import TrainingRun

DPI = 100
ANNOTATE_UP_TO = 12  # classes; beyond, the cells are too small for their numbers


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    """Render a figure to PNG and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    pyplot().close(fig)
    return buffer.getvalue()


def curve_points(run: TrainingRun) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(iteration, training loss per model) and (iteration, validation mIoU %) of a run's log."""
    train = [(r["iteration"], r["loss"] * run.loss_scale) for r in run.rows
             if r["split"] == "train" and r["loss"] is not None]
    val = [(r["iteration"], 100 * r["mean_iou"]) for r in run.rows if r["split"] == "val" and r["mean_iou"] is not None]
    return train, val


def curves_figure(runs: Sequence[TrainingRun]) -> bytes | None:
    """Training loss and validation mIoU (%) against the iteration; None when nothing was logged."""
    if not any(run.rows for run in runs):
        return None
    plt = pyplot()
    fig, (loss_ax, miou_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    for index, run in enumerate(runs):
        colour = f"C{index % 10}"
        train, val = curve_points(run)
        if train:
            loss_ax.plot(*zip(*train), color=colour, linewidth=1.2, label=run.name)
        if len(val) == 1:  # validated once (at its end): a point that says its value, not a lone dot
            miou_ax.plot(*val[0], color=colour, marker="o", markersize=6, linestyle="none", label=run.name)
            miou_ax.annotate(f"{val[0][1]:.1f}", val[0], textcoords="offset points", xytext=(5, 4), fontsize=8,
                             color=colour)
        elif val:
            miou_ax.plot(*zip(*val), color=colour, marker="o", markersize=3, linewidth=1.2, label=run.name)
    loss_ax.set(title="training loss", xlabel="iteration", ylabel="cross-entropy")
    miou_ax.set(title="validation mIoU", xlabel="iteration", ylabel="mIoU (%)")
    from matplotlib.ticker import MaxNLocator

    miou_ax.margins(x=0.1)  # room for the last point's label
    for ax in (loss_ax, miou_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = loss_ax.get_legend_handles_labels()
    if not handles:
        handles, labels = miou_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.02 - 0.045 * ((len(labels) - 1) // 4)))
    fig.tight_layout(rect=(0, 0.08 + 0.045 * ((len(labels) - 1) // 4), 1, 1))
    return png_bytes(fig)


def row_normalised(confusion: Sequence[Sequence[int]]) -> np.ndarray:
    """Each ground-truth row divided by its pixel count (rows of absent classes stay 0)."""
    counts = np.asarray(confusion, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def confusion_figure(confusion: Sequence[Sequence[int]], class_names: Sequence[str], title: str) -> bytes:
    """The row-normalised confusion matrix as a heat map (rows = ground truth, columns = prediction);
    classes neither in the ground truth nor predicted are left out."""
    plt = pyplot()
    counts = np.asarray(confusion)
    present = (counts.sum(0) + counts.sum(1)) > 0  # in the ground truth or predicted
    if present.any():
        counts, class_names = counts[present][:, present], [n for n, p in zip(class_names, present) if p]
    matrix = row_normalised(counts)
    count = len(class_names)
    side = min(11.0, 2.5 + 0.42 * count)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(count), labels=class_names, rotation=90, fontsize=8)
    ax.set_yticks(range(count), labels=class_names, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="ground-truth class", title=title)
    if count <= ANNOTATE_UP_TO:
        for (row, col), value in np.ndenumerate(matrix):
            if value >= 0.005:
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the ground-truth class")
    fig.tight_layout()
    return png_bytes(fig)


def sample_figure(rows: Sequence[tuple[str, Sequence[np.ndarray]]], titles: Sequence[str]) -> bytes:
    """A grid of uint8 RGB panels: one row per image (`(image id, panels)`), one column per title."""
    plt = pyplot()
    columns = len(titles)
    heights = [panels[0].shape[0] / panels[0].shape[1] for _, panels in rows]
    width = 2.1
    fig, axes = plt.subplots(len(rows), columns, squeeze=False,
                             figsize=(width * columns, sum(width * h + 0.35 for h in heights)))
    for r, (image_id, panels) in enumerate(rows):
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(textwrap.fill(titles[c], 24), fontsize=8)
            if c == 0:
                ax.set_ylabel(image_id, fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)
