"""Per-class score maps z of a tap (the paper's Figures 4-6) as PNG image grids.

One figure per configuration: per image, the image, its ground truth, the prediction, then the
C class maps z_c of the tap's head (of the top's 1×1 conv for "no connection") at their own
resolution. Each row shares one colour scale over its C maps, so a class that does not respond
stays dark next to one that does (the paper: "the feature maps of negative cases are almost black").
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from skipseg.errors import SkipsegError

# maps_fn(x [1, 3, H, W]) -> (z [C, h, w] of the tap (or top), prediction [G, G] or [H, W] labels)
MapsFn = Callable[[Tensor], tuple[Tensor, Tensor]]
Sample = tuple[str, Tensor, Tensor]  # (image id, normalised image [3, H, W], mask [H, W])
COLUMNS = 12  # panels per figure row; an image's panels wrap onto as many rows as they need


def pick_samples(dataset, ids: Sequence[str] | None, count: int) -> list[Sample]:
    """The listed images of `dataset` (eval transforms), else its first `count`."""
    if ids is None:
        indices = list(range(min(count, len(dataset))))
    else:
        missing = [i for i in ids if i not in dataset.ids]
        if missing:
            raise SkipsegError(f"sweep.score_map_images: {missing[0]!r} is not in the val split")
        indices = [dataset.ids.index(i) for i in ids]
    samples = []
    for index in indices:
        image, mask = dataset[index]
        samples.append((dataset.ids[index], image.as_subclass(Tensor), mask.as_subclass(Tensor)))
    return samples


def model_maps(model: torch.nn.Module, head: str | None = None) -> MapsFn:
    """`MapsFn` of a `SkipNet` (head None) or of one head of a `ProbeNet`, on CPU in fp32."""

    def maps(x: Tensor) -> tuple[Tensor, Tensor]:
        if getattr(model, "input_size", None):
            x = F.interpolate(x, size=model.input_size, mode="bilinear", align_corners=False)
        with torch.inference_mode():
            z = model.class_maps(x) if head is None else model.class_maps(x, head)
            out = model(x) if head is None else model(x)[head]
        return z.get("tap", z["top"])[0].float(), out[0].argmax(0)

    return maps


def _rgb(image: Tensor) -> np.ndarray:
    from skipseg.data.transforms import denormalize

    return (denormalize(image).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _labels(label: Tensor, size: tuple[int, int]) -> np.ndarray:
    """Class labels as VOC colours at `size` (nearest: a G×G prediction shows its cells)."""
    from skipseg.data.palette import colorize

    label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return colorize(label.numpy().astype(np.uint8))


def score_map_figure(samples: Sequence[Sample], maps_fn: MapsFn, class_names: Sequence[str], title: str,
                     path: str | Path) -> Path:
    """Write the figure of one configuration to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels_per_image = 3 + len(class_names)
    columns = min(COLUMNS, panels_per_image)
    rows_per_image = -(-panels_per_image // columns)
    fig, axes = plt.subplots(rows_per_image * len(samples), columns, squeeze=False,
                             figsize=(1.2 * columns, 1.3 * rows_per_image * len(samples) + 0.4))
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (image_id, image, mask) in enumerate(samples):
        z, pred = maps_fn(image[None])
        size = tuple(image.shape[-2:])
        low, high = float(z.min()), float(z.max())
        panels = [(_rgb(image), image_id, {}), (_labels(mask, size), "ground truth", {}),
                  (_labels(pred, size), "prediction", {})]
        scale = {"cmap": "inferno", "vmin": low, "vmax": high if high > low else low + 1}
        panels += [(z[c].numpy(), f"{c} {name}"[:16], scale) for c, name in enumerate(class_names)]
        for k, (picture, label, style) in enumerate(panels):
            ax = axes[i * rows_per_image + k // columns, k % columns]
            ax.imshow(picture, **style)
            ax.set_title(label, fontsize=6)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sweep_score_maps(config, records: Sequence[dict], dirs: Sequence[Path], mode: str, out_dir: Path) -> list[Path]:
    """A figure per connection (its best n) of a finished sweep, into `out_dir`."""
    from skipseg.core.rundir import PROBE_RUN, completed_run
    from skipseg.data.datasets import open_dataset
    from skipseg.data.transforms import eval_transforms
    from skipseg.engine.probe import probe_from_run
    from skipseg.inference.predictor import model_from_checkpoint
    from skipseg.report.tables import best_by_tap

    section = config.sweep
    if section.score_map_count <= 0 and not section.score_map_images:
        return []
    data = config.data
    dataset = open_dataset(data.val_root or data.root, data.val_split, transforms=eval_transforms(), sbd_root=data.sbd_root)
    samples = pick_samples(dataset, section.score_map_images, section.score_map_count)
    written: list[Path] = []
    probe = None
    for label, rec in best_by_tap(records).items():
        name = rec["name"]
        if mode == "probe":
            probe = probe if probe is not None else probe_from_run(completed_run(dirs, PROBE_RUN).path)
            maps = model_maps(probe, name)
        else:
            model, _, _ = model_from_checkpoint(completed_run(dirs, name).path, prefer="last")
            maps = model_maps(model)
        what = "no connection: z of the top" if label is None else f"tap {label} ({rec['tap']}), n = {rec['kernel']}: z"
        written.append(score_map_figure(samples, maps, dataset.class_names, f"{what} per class",
                                        out_dir / f"{name}.png"))
    return written
