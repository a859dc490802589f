"""Proposal-wise inference for any model (DeconvNet §5.1, eq. 1 and 2).

Each proposal box is cropped and resized to the model's input (`model.input_size`, else `size`),
many crops go through the model in one forward (`batch_size` at a time), each crop's score map is
resized back to its box and put in image space with zeros outside (G_i), and the maps of all
proposals are combined pixel-wise by max (eq. 1, the paper's choice) or sum (eq. 2); a softmax over
classes gives the probabilities.

Crop + resize is one `roi_align` per batch (bilinear sampling at the output cells' centres, as
`F.interpolate(align_corners=False)` of the crop; a box larger than the input is averaged over
several samples per cell, like an antialiased resize). With max, "zeros outside" is taken
literally: a pixel that some proposal does not cover sees that proposal's 0 in the maximum.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from skipseg.core.runtime import Runtime
from skipseg.errors import SkipsegError

AGGREGATES = ("max", "sum")


def clip_boxes(boxes: np.ndarray | Tensor | Sequence, height: int, width: int) -> Tensor:
    """(x0, y0, x1, y1) boxes as int64 `[K, 4]`, clipped to the image; empty boxes dropped."""
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float64)).reshape(-1, 4)
    x0, x1 = boxes[:, 0].floor().clamp(0, width), boxes[:, 2].ceil().clamp(0, width)
    y0, y1 = boxes[:, 1].floor().clamp(0, height), boxes[:, 3].ceil().clamp(0, height)
    boxes = torch.stack([x0, y0, x1, y1], 1).long()
    return boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]


def crop_batch(image: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """`[3, H, W]` image, `[B, 4]` boxes → `[B, 3, size]` crops (bilinear, pixel-edge box coordinates)."""
    rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes], 1).to(image.dtype)  # [B, 5]: (batch, box)
    return roi_align(image[None], rois, output_size=size, spatial_scale=1.0, sampling_ratio=0, aligned=True)


def proposal_scores(model: nn.Module, image: Tensor, boxes: np.ndarray | Tensor | Sequence, runtime: Runtime,
                    aggregate: str = "max", batch_size: int = 16,
                    size: tuple[int, int] = (224, 224)) -> Tensor:
    """The aggregated class scores P `[C, H, W]` (float32, before the softmax) of eq. 1 or 2."""
    if aggregate not in AGGREGATES:
        raise SkipsegError(f"aggregate: '{aggregate}' is not one of {', '.join(AGGREGATES)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SkipsegError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
    if image.dim() != 3 or image.shape[0] != 3:
        raise SkipsegError(f"proposals: expected a normalised [3, H, W] image, got {tuple(image.shape)}")
    height, width = (int(s) for s in image.shape[-2:])
    boxes = clip_boxes(boxes, height, width)
    if not len(boxes):
        raise SkipsegError(f"proposals: no box overlaps the {height}x{width} image")
    input_size = tuple(int(s) for s in (getattr(model, "input_size", None) or size))
    image = image.to(runtime.device, torch.float32)
    # Scores are pasted channels-last ([H, W, C]): a box's rows are then contiguous runs, and a
    # channels_last model's output needs no transpose.
    total: Tensor | None = None
    cover = torch.zeros(height, width, dtype=torch.int32, device=runtime.device)
    with torch.inference_mode():
        for start in range(0, len(boxes), batch_size):
            chunk = boxes[start : start + batch_size]
            crops = runtime.to_input(crop_batch(image, chunk.to(runtime.device), input_size))  # [B, 3, h, w]
            with runtime.autocast():
                logits = model(crops).float()  # [B, C, h, w]
            logits = logits.contiguous(memory_format=torch.channels_last)
            if total is None:
                fill = 0.0 if aggregate == "sum" else float("-inf")
                total = torch.full((height, width, logits.shape[1]), fill, device=runtime.device)
            for (x0, y0, x1, y1), scores in zip(chunk.tolist(), logits):
                g = F.interpolate(scores[None], size=(y1 - y0, x1 - x0), mode="bilinear",
                                  align_corners=False)[0].permute(1, 2, 0)  # [box h, box w, C]
                region = total[y0:y1, x0:x1]
                if aggregate == "max":
                    torch.maximum(region, g, out=region)
                else:
                    region += g
                cover[y0:y1, x0:x1] += 1
    assert total is not None
    if aggregate == "max":  # the zeros outside each box: in the max wherever a proposal misses
        total = torch.where((cover < len(boxes))[:, :, None], total.clamp(min=0.0), total)
    total = total.permute(2, 0, 1).contiguous()  # [C, H, W]
    return total


def proposal_probs(model: nn.Module, image: Tensor, boxes: np.ndarray | Tensor | Sequence, runtime: Runtime,
                   aggregate: str = "max", batch_size: int = 16, size: tuple[int, int] = (224, 224)) -> Tensor:
    """Class probabilities `[C, H, W]` (float32, on the runtime's device) of one normalised
    `[3, H, W]` image from the model's predictions on its proposal `boxes` ((x0, y0, x1, y1), x1/y1
    exclusive): aggregated by `max` (eq. 1) or `sum` (eq. 2), then softmax. The model is used as it
    is (put it in eval mode); crops go `batch_size` per forward, resized to `model.input_size` or
    `size`."""
    return proposal_scores(model, image, boxes, runtime, aggregate, batch_size, size).softmax(dim=0)
