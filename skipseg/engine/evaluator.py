"""Dataset evaluation: whole images at native size, batched by size, one confusion matrix for all."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from skipseg.data.palette import save_label_png
from skipseg.core.loading import guarded_batches
from skipseg.core.runtime import Runtime
from skipseg.core.sampling import SizeGroupedBatchSampler
from skipseg.errors import SkipsegError
from skipseg.inference.predictor import predict_probs
from skipseg.metrics import ConfusionMatrix, CrossEntropyMeter

# probs_fn(images [N,3,H,W] normalised, indices) -> probabilities [N, C, H, W] (or [N, C, G_h, G_w])
ProbsFn = Callable[[torch.Tensor, list[int]], torch.Tensor]
# target_fn(masks [N, H, W] int64) -> labels of what the model predicts, e.g. grid cells [N, G_h, G_w]
TargetFn = Callable[[torch.Tensor], torch.Tensor]


def grid_targets(model: nn.Module) -> TargetFn | None:
    """How a model's outputs are scored when they are not pixels: a model with `output_grid` set
    (e.g. the box-wise skip net) predicts a fixed grid of image cells, and its
    `target_from_mask(mask)` gives their labels; for every other model None (the mask itself)."""
    return model.target_from_mask if getattr(model, "output_grid", None) else None


class _Indexed(Dataset):
    """Adds the dataset index to each item so predictions can be saved under the image's id."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        image, mask = self.dataset[index]
        return image, mask, index


def image_sizes(dataset) -> list[tuple[int, int]]:
    """(H, W) of every image from the file headers (no decoding); an unreadable file is reported
    by the dataset's own loader, with the message `skipseg data check` gives for it."""
    sizes = []
    for index in range(len(dataset)):
        try:
            with Image.open(dataset.image_path(index)) as image:
                sizes.append((image.height, image.width))
        except OSError:
            dataset.load(index)  # raises the data-check error for this file
            raise
    return sizes


def evaluate_dataset(dataset, probs_fn: ProbsFn, num_classes: int, runtime: Runtime, *,
                     batch_size: int = 4, workers: int = 2, save_pred_dir: str | Path | None = None,
                     class_names: Sequence[str] | None = None, max_images: int | None = None,
                     progress: bool = True, target_fn: TargetFn | None = None) -> dict:
    """Score `probs_fn` on `dataset` (eval transforms applied); with `save_pred_dir`, write
    `<id>.png` palette predictions. Under torchrun each rank takes a share and matrices are summed.
    `target_fn` maps masks to the labels of a model that predicts grid cells (`grid_targets`)."""
    if max_images is not None and max_images < len(dataset):
        dataset = torch.utils.data.Subset(dataset, range(max_images))
        base = dataset.dataset
        sizes = image_sizes(base)[:max_images]
    else:
        base = dataset
        sizes = image_sizes(dataset)
    sampler = SizeGroupedBatchSampler(sizes, batch_size, runtime.rank, runtime.world_size)
    loader = guarded_batches(_Indexed(dataset), sampler, workers, pin_memory=runtime.device.type == "cuda")
    confusion = ConfusionMatrix(num_classes, device=runtime.device)
    cross_entropy = CrossEntropyMeter(device=runtime.device)
    if save_pred_dir is not None:
        save_pred_dir = Path(save_pred_dir)
        save_pred_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(loader, desc="evaluate", unit="batch", total=len(sampler),
               disable=not (progress and runtime.is_main), leave=False)
    for images, masks, indices in bar:
        probs = probs_fn(images, indices.tolist())
        pred = probs.argmax(dim=1)
        target = masks.to(pred.device)
        if target_fn is not None:
            target = target_fn(target)
        elif pred.shape[-2:] != target.shape[-2:]:
            raise SkipsegError(f"predictions of {tuple(pred.shape[-2:])} cells for masks of {tuple(target.shape[-2:])} "
                               "pixels: a model predicting grid cells is scored with its target_from_mask")
        confusion.update(pred, target)
        cross_entropy.update(probs, target, log=False)
        if save_pred_dir is not None:
            for label, index in zip(pred.cpu().numpy().astype(np.uint8), indices.tolist()):
                save_label_png(save_pred_dir / f"{base.ids[index]}.png", label)
    confusion.all_reduce()
    cross_entropy.all_reduce()
    return {**confusion.compute(class_names), "cross_entropy": cross_entropy.compute()}


def evaluate_model(model: nn.Module, dataset, runtime: Runtime, *, flip: bool = False,
                   scales: Sequence[float] = (1.0,), **kwargs) -> dict:
    """`evaluate_dataset` for one model's whole-image predictions (eval mode, inference_mode)."""
    was_training = model.training
    model.eval()
    try:
        return evaluate_dataset(
            dataset, lambda images, _: predict_probs(model, images, runtime, flip=flip, scales=scales),
            model.num_classes, runtime, target_fn=grid_targets(model), **kwargs,
        )
    finally:
        model.train(was_training)
