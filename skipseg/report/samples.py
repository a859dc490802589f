"""Sample predictions: a few images of the evaluated split, their ground truth, and each system's
prediction overlaid, predicted as its evaluation did (the same runs averaged, the same proposals,
aggregation and CRF; the CRF with the parameters metrics.json records, else the reference ones).

Kept cheap: the first N images of the split, each model loaded once for all systems that use it.
A system whose models cannot be rebuilt (moved runs, another class list) is left out with a note.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from skipseg.core.rundir import RunDir
from skipseg.errors import SkipsegError, UnsafeFileError
from skipseg.report.collect import System


class HeadOf(nn.Module):
    """One head of a probe run as a plain model, as `predict_probs` expects it."""

    def __init__(self, probe: nn.Module, name: str) -> None:
        super().__init__()
        self.probe, self.head = probe, name
        self.num_classes, self.input_size = probe.num_classes, probe.input_size
        self.output_grid = probe.output_grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(x)[self.head]  # [N, C, G, G] cells or [N, C, H, W]


@dataclass
class Models:
    """Models loaded once per (run, checkpoint, head), with their configs."""

    runtime: object
    loaded: dict = field(default_factory=dict)

    def get(self, path: Path, head: str | None, prefer: str) -> tuple[nn.Module, object]:
        key = (str(path.resolve()), head, prefer)
        if key not in self.loaded:
            self.loaded[key] = self._load(path, head, prefer)
        return self.loaded[key]

    def _load(self, path: Path, head: str | None, prefer: str) -> tuple[nn.Module, object]:
        from skipseg.config import load_config
        from skipseg.inference.predictor import model_from_checkpoint

        if head is None:
            model, config, _ = model_from_checkpoint(path, self.runtime, prefer=prefer)
            return model, config
        from skipseg.engine.probe import probe_from_run

        model = self.runtime.prepare_model(HeadOf(probe_from_run(path, prefer), head))
        return model.eval(), load_config(RunDir(path).config)


def _options(system: System):
    from skipseg.inference.crf import CRFParams
    from skipseg.inference.pipeline import InferenceOptions

    inference = system.inference
    cache = system.proposal_cache if system.proposal_cache and system.proposal_cache.is_dir() else None
    return InferenceOptions(flip=bool(inference.get("flip")), scales=tuple(inference.get("scales") or (1.0,)),
                            proposals=int(inference.get("proposals") or 0),
                            aggregate=inference.get("aggregate") or "max", proposal_cache=cache,
                            crf=CRFParams(**(inference.get("crf_params") or {})) if inference.get("crf") else None)


def _rgb(image: torch.Tensor) -> np.ndarray:
    from skipseg.data.transforms import denormalize

    return (denormalize(image).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _label(probs: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """`[1, C, h, w]` probabilities → `(H, W)` labels; grid cells shown as blocks (nearest)."""
    label = probs.argmax(1, keepdim=True).float()
    if tuple(label.shape[-2:]) != size:
        label = F.interpolate(label, size=size, mode="nearest")
    return label[0, 0].to(torch.uint8).cpu().numpy()


def sample_panels(systems: Sequence[System], count: int, data: str | Path | None = None,
                  split: str | None = None, device: str = "auto") -> tuple[bytes | None, list[str]]:
    """The sample figure (PNG bytes, None when nothing could be shown) and notes on what was left out."""
    from skipseg.data.transforms import eval_transforms
    from skipseg.data.datasets import open_dataset
    from skipseg.core.runtime import make_runtime
    from skipseg.inference.pipeline import make_probs_fn
    from skipseg.inference.predictor import overlay
    from skipseg.report.figures import sample_figure

    if count <= 0:
        return None, []
    models, notes = Models(make_runtime(device, "auto")), []
    usable: list[tuple[System, list[nn.Module]]] = []
    config = None
    for system in systems:
        missing = [str(run) for run in system.runs if not run.exists()]
        if missing or not system.runs:
            notes.append(f"{system.label}: no sample predictions ({', '.join(missing) or 'no runs'} not found)")
            continue
        try:
            loaded = [models.get(run, system.head, system.prefer) for run in system.runs]
        except UnsafeFileError:
            raise  # a shared file that wants to run code stops the report, it is not a missing sample
        except SkipsegError as exc:
            notes.append(f"{system.label}: no sample predictions ({exc})")
            continue
        usable.append((system, [model for model, _ in loaded]))
        config = config or loaded[0][1]
    if not usable:
        return None, notes
    root = data or config.data.val_root or config.data.root
    split = split or usable[0][0].split or config.data.val_split
    try:
        dataset = open_dataset(root, split, transforms=eval_transforms(), sbd_root=config.data.sbd_root)
    except SkipsegError as exc:
        if data is not None:
            raise
        return None, notes + [f"no sample images: {exc} (the runs' data; give another with --data ROOT)"]
    columns = []
    for system, group in usable:
        if any(m.num_classes != dataset.num_classes for m in group):
            notes.append(f"{system.label}: no sample predictions (its models predict another number of classes "
                         f"than the {dataset.num_classes} of {root})")
            continue
        columns.append((system, make_probs_fn(group, dataset.image_path, models.runtime, _options(system))))
    rows = []
    for index in range(min(count, len(dataset))):
        image, mask = dataset[index]
        image, mask = image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
        rgb, size = _rgb(image), tuple(image.shape[-2:])
        panels = [rgb, overlay(rgb, mask.numpy().astype(np.uint8))]
        panels += [overlay(rgb, _label(probs_fn(image[None], [index]), size)) for _, probs_fn in columns]
        rows.append((dataset.ids[index], panels))
    if not rows:
        return None, notes + [f"{root}: split {split} has no images"]
    titles = ["image", "ground truth", *(system.label for system, _ in columns)]
    return sample_figure(rows, titles), notes
