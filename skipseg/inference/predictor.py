"""Whole-image prediction: probability maps with optional flip and multi-scale averaging."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from skipseg.config import Config, config_from_dict
from skipseg.core.checkpoint import load_checkpoint
from skipseg.core.runtime import Runtime
from skipseg.errors import SkipsegError
from skipseg.models.cells import cells_mirror_symmetric


def predict_probs(model: nn.Module, images: torch.Tensor, runtime: Runtime,
                  flip: bool = False, scales: Sequence[float] = (1.0,)) -> torch.Tensor:
    """Class probabilities `[N, C, H, W]` (float32, on the runtime's device) for a normalised batch.

    Each scale s runs the model on the batch resized by s; its logits are resized back to (H, W)
    and turned into probabilities; with `flip` the mirrored batch is added. The result is the mean
    over all of these (the usual test-time augmentation: averaging probabilities, not logits).
    A model with a fixed `input_size` (e.g. DeconvNet's 224×224) gets the batch resized to it. A
    model with `output_grid` (the box-wise skip net) predicts cells of the image, not pixels: its
    `[N, C, G_h, G_w]` is returned as it is.
    """
    images = runtime.to_input(images)
    height, width = images.shape[-2:]
    fixed_size = getattr(model, "input_size", None)
    grid = getattr(model, "output_grid", None)  # a model predicting G×G image cells: left as cells
    total: torch.Tensor | None = None
    count = 0
    with torch.inference_mode(), runtime.autocast():
        for scale in scales:
            size = tuple(fixed_size) if fixed_size else (max(1, round(height * scale)), max(1, round(width * scale)))
            scaled = images
            if size != (height, width):
                scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
            if flip and grid is not None and not cells_mirror_symmetric(size[1], grid[1]):
                # The mirrored image's cell j would not cover the pixels of cell G-1-j: averaging
                # the two would mix neighbouring cells' predictions.
                raise SkipsegError(f"--flip: the {grid[1]} cells across a {size[1]}-pixel-wide image are not "
                                   "mirror images of each other (a boundary falls on a half pixel); use an odd "
                                   "grid or another width, or leave out --flip")
            views = [(scaled, False)] + ([(scaled.flip(-1), True)] if flip else [])
            for view, flipped in views:
                logits = model(view).float()  # [N, C, h, w]
                if flipped:
                    logits = logits.flip(-1)
                if grid is None and logits.shape[-2:] != (height, width):
                    logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
                probs = logits.softmax(dim=1)
                total = probs if total is None else total + probs
                count += 1
    assert total is not None
    return total / count


def model_from_checkpoint(run_or_checkpoint: str | Path, runtime: Runtime | None = None,
                          prefer: str = "best") -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuild a trained model from a run folder or checkpoint file, in eval mode (a staged run's
    folder stands for its final stage: `RunDir.final`).

    Weights come from the checkpoint, so ImageNet/init options of the original config are dropped.
    """
    from skipseg.models import build_model

    state = load_checkpoint(run_or_checkpoint, prefer)
    config = config_from_dict(state["config"])
    model = build_model(config.model.name, **model_options(config, with_init=False))
    model.load_state_dict(state["model"])
    model.eval()
    if runtime is not None:
        model = runtime.prepare_model(model)
    return model, config, state


def model_options(config: Config, with_init: bool = True) -> dict[str, Any]:
    """The keyword options `build_model` gets from `config.model`: num_classes, width, the init
    options that are set (with `with_init`) and the model's own options that are set, checked
    against its builder and typed (`registry.config_options`)."""
    from skipseg.models.registry import config_options

    model = config.model
    options: dict[str, Any] = {"num_classes": model.num_classes, "width": model.width}
    if with_init:
        options.update({k: v for k in ("pretrained", "weights", "init_from") if (v := getattr(model, k)) is not None})
    options.update(config_options(model))
    return options


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as an (H, W, 3) uint8 RGB array (any PIL mode converted); unreadable → one-line error."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise SkipsegError(f"{path}: not a readable image ({exc})") from None


def read_rgb_tensor(path: str | Path) -> torch.Tensor:
    """An image file as a uint8 `[3, H, W]` RGB tensor (see `read_rgb`)."""
    return torch.from_numpy(np.ascontiguousarray(read_rgb(path).transpose(2, 0, 1)))


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the VOC colours of `label` over an `(H, W, 3)` uint8 image (background left as is)."""
    from skipseg.data.palette import colorize

    blended = image.astype(np.float32)
    mask = (label != 0) & (label != 255)
    blended[mask] = (1 - alpha) * blended[mask] + alpha * colorize(label)[mask]
    return blended.round().astype(np.uint8)
