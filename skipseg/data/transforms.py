"""Joint image + mask transforms on torchvision.transforms.v2 (`tv_tensors.Image` / `tv_tensors.Mask`);
the training augmentation built from their kernels is `data.augmentation`.

Geometry is applied to both with the same random draw; images are resized bilinearly (antialiased),
masks always by nearest neighbour (NEAREST_EXACT: pixel-centre aligned like the bilinear image), so
no transform can invent a label: output mask values ⊆ input values ∪ {255} (255 fills crop padding).
Every random choice is drawn from torch's global RNG, so `torch.manual_seed` makes a pipeline
reproducible (the trainer relies on it to resume exactly).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Size = int | tuple[int, int]


def size_pair(size: Size, what: str) -> tuple[int, int]:
    """An int n means n×n (e.g. DeconvNet's 250×250); a pair is (height, width)."""
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{what} must be a positive int or (height, width), got {size}")
    return size  # type: ignore[return-value]


def _resize(inpt: Any, size: list[int]) -> Any:
    if isinstance(inpt, tv_tensors.Mask):
        return F.resize(inpt, size, interpolation=InterpolationMode.NEAREST_EXACT)
    return F.resize(inpt, size, interpolation=InterpolationMode.BILINEAR, antialias=True)


class _JointTransform(v2.Transform):
    # torchvision < 0.21 calls these by their old private names.
    def _get_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return self.make_params(flat_inputs)

    def _transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self.transform(inpt, params)


class Resize(_JointTransform):
    """Resize to a fixed (height, width): image bilinear, mask nearest."""

    def __init__(self, size: Size):
        super().__init__()
        self.size = list(size_pair(size, "resize"))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return _resize(inpt, self.size)


class RandomScale(_JointTransform):
    """Scale both sides by one factor drawn uniformly from `scale_range` (torch RNG)."""

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)):
        super().__init__()
        low, high = (float(s) for s in scale_range)
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (low, high)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        low, high = self.scale_range
        scale = low + (high - low) * float(torch.rand(()))
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return _resize(inpt, params["size"])


class JointTransform:
    """`(image, mask) -> (image, mask)` around a v2 pipeline.

    Accepts a PIL image, an (H, W, 3) uint8 array or a [3, H, W] tensor, and a mask as a (H, W) array,
    tensor or PIL index image (or None); returns (float `tv_tensors.Image`, int64 `tv_tensors.Mask`).
    """

    def __init__(self, pipeline: v2.Transform):
        self.pipeline = pipeline

    def __call__(self, image: Any, mask: Any = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        image = as_image(image)
        if mask is None:
            return self.pipeline(image), None
        return tuple(self.pipeline(image, as_mask(mask)))  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline!r})"


def as_image(image: Any) -> tv_tensors.Image:
    """A PIL image, (H, W, 3) uint8 array or [3, H, W] tensor as a `tv_tensors.Image`."""
    if isinstance(image, tv_tensors.Image):
        return image
    if isinstance(image, Image.Image):
        return F.to_image(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        return F.to_image(np.ascontiguousarray(image))
    return tv_tensors.Image(image)


def as_mask(mask: Any) -> tv_tensors.Mask:
    """A (H, W) array, PIL index image or tensor as a `tv_tensors.Mask` (arrays become int64)."""
    if isinstance(mask, tv_tensors.Mask):
        return mask
    if isinstance(mask, Image.Image):
        mask = np.array(mask)
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask.astype(np.int64))
    return tv_tensors.Mask(mask)


def _finish(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]


_AS_UINT8 = {tv_tensors.Image: torch.uint8, "others": None}


def eval_transforms(
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    resize: Size | None = None,
) -> Callable:
    """Deterministic: [resize] → float, normalised; mask int64. Native size by default."""
    steps: list[v2.Transform] = [v2.ToDtype(_AS_UINT8, scale=True)]
    if resize is not None:
        steps.append(Resize(resize))
    return JointTransform(v2.Compose(steps + _finish(mean, std)))


def _stats(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]):
    """mean and std as [3, 1, 1] tensors on the image's device and dtype."""
    like = dict(dtype=image.dtype, device=image.device)
    return torch.as_tensor(mean, **like).view(-1, 1, 1), torch.as_tensor(std, **like).view(-1, 1, 1)


def normalize(
    image: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """A uint8 or [0, 1] float image ([3, H, W] or [N, 3, H, W]) → normalised float, as the pipelines."""
    image = image.as_subclass(torch.Tensor)
    image = image.float() / 255 if not image.is_floating_point() else image
    m, s = _stats(image, mean, std)
    return (image - m) / s


def denormalize(
    image: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Undo the normalisation ([3, H, W] or [N, 3, H, W]) → float in [0, 1], for overlays."""
    image = image.as_subclass(torch.Tensor).float()
    m, s = _stats(image, mean, std)
    return (image * s + m).clamp_(0, 1)
