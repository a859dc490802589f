"""The training augmentation: torchvision v2's kernels on plain tensors, the loader finishing batches.

Geometry is applied to image and mask with the same random draw (`data.transforms` says how each is
resized); every random choice is drawn from torch's global RNG, so `torch.manual_seed` makes it
reproducible (the trainer relies on it to resume exactly).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from skipseg.data.palette import IGNORE_INDEX
from skipseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, RandomScale, Size, as_image, as_mask, size_pair


class TrainAugmentation:
    """[resize] → random scale → random crop (padded: image with the mean pixel, mask with 255) →
    [horizontal flip] → float, normalised; mask int64. Returns (`tv_tensors.Image`, `tv_tensors.Mask`).

    This is the v2 pipeline `Compose([ToDtype(uint8), Resize, RandomScale, RandomCrop(pad_if_needed,
    fill), RandomHorizontalFlip, ToDtype(float32), Normalize])` written as calls of its functional
    kernels on plain tensors: the same random draws from torch's RNG in the same order, the same
    output tensors (tests/data/test_transforms.py holds it to that Compose). Why not the Compose itself:
    it flattens, checks and dispatches both inputs at every transform, which at the demo's 64 px
    costs more than the kernels do, and a training loop without loader workers waits for it.

    `finish=False` stops before the last step: a uint8 image and the mask in its own dtype, so that
    the loader finishes a whole batch at once (`finish_batch`: the same arithmetic on every pixel,
    one call per batch instead of per image; the trainer does this).
    """

    def __init__(self, crop_size: Size | None, scale_range: tuple[float, float] | None, flip: bool,
                 resize: Size | None, mean: Sequence[float], std: Sequence[float], finish: bool = True) -> None:
        self.finish = finish
        self.crop = size_pair(crop_size, "crop_size") if crop_size is not None else None
        self.resize = list(size_pair(resize, "resize")) if resize is not None else None
        self.scale = RandomScale(scale_range).scale_range if scale_range is not None else None
        self.flip = flip
        self.mean, self.std = list(mean), list(std)
        # ToDtype + Normalize's arithmetic (× 1/255, − mean, ÷ std) with the [3, 1, 1] tensors made
        # once: Normalize builds and checks them at every call, a fifth of this pipeline at 64 px.
        self._mean = torch.as_tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.as_tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        # Padding happens on the uint8 image, so the mean pixel in 0..255 (it normalises to ~0).
        self.fill = [int(round(255 * m)) for m in mean]
        self._fill = torch.tensor(self.fill, dtype=torch.uint8).view(-1, 1, 1)

    def __call__(self, image: Any, mask: Any = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        image = as_image(image).as_subclass(torch.Tensor)
        mask = as_mask(mask).as_subclass(torch.Tensor) if mask is not None else None
        if image.dtype != torch.uint8:
            image = F.to_dtype_image(image, torch.uint8, scale=True)
        if self.resize is not None:
            image, mask = self._resized(image, mask, self.resize)
        if self.scale is not None:
            low, high = self.scale
            scale = low + (high - low) * float(torch.rand(()))
            height, width = image.shape[-2:]
            image, mask = self._resized(image, mask, [max(1, round(height * scale)), max(1, round(width * scale))])
        if self.crop is not None:
            image, mask = self._cropped(image, mask)
        if self.flip and not torch.rand(1) >= 0.5:  # RandomHorizontalFlip(p=0.5)'s draw and test
            image = image.flip(-1)  # what F.horizontal_flip_image/_mask do
            mask = mask.flip(-1) if mask is not None else None
        if self.finish:
            image, mask = self.finish_batch(image, mask)
        if mask is None:
            return image.as_subclass(tv_tensors.Image), None
        return image.as_subclass(tv_tensors.Image), mask.as_subclass(tv_tensors.Mask)

    @property
    def batch_finish(self) -> Callable | None:
        """What a loader applies to each collated batch of this augmentation's items: `finish_batch`
        if they stop at uint8 crops (`finish=False`), else nothing."""
        return None if self.finish else self.finish_batch

    def finish_batch(self, images: torch.Tensor, masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 images ([3, H, W] or [N, 3, H, W]) → float32, normalised; masks → int64."""
        images = images.to(torch.float32).mul_(1.0 / 255).sub_(self._mean).div_(self._std)
        return images, masks.to(torch.int64) if masks is not None else None

    @staticmethod
    def _resized(image: torch.Tensor, mask: torch.Tensor | None, size: list[int]):
        image = F.resize_image(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        if mask is not None and mask.dtype == torch.uint8 and mask.dim() == 2:
            # The uint8 labels the datasets give: F.resize_mask's nearest-exact kernel as two
            # gathers of rows and columns, whose indices depend on the sizes only (kept per size):
            # the kernel's own index arithmetic, so the same output (tests hold it to the kernel),
            # with no float round trip, which F.resize_mask makes for int64, nor per-pixel indices.
            rows, cols = nearest_exact_indices(mask.shape[0], size[0]), nearest_exact_indices(mask.shape[1], size[1])
            mask = mask.index_select(0, rows).index_select(1, cols)
        elif mask is not None:
            mask = F.resize_mask(mask, size, interpolation=InterpolationMode.NEAREST_EXACT)
        return image, mask

    def _cropped(self, image: torch.Tensor, mask: torch.Tensor | None):
        """v2.RandomCrop(pad_if_needed=True): a short side is padded by the shortfall on both ends,
        then a window of the padded image is taken; here the window is cut from the unpadded image
        into a canvas of the fill (the same pixels, without building the padded image)."""
        crop_height, crop_width = self.crop
        height, width = image.shape[-2:]
        pad_height, pad_width = max(0, crop_height - height), max(0, crop_width - width)
        padded_height, padded_width = height + 2 * pad_height, width + 2 * pad_width
        top = int(torch.randint(0, padded_height - crop_height + 1, ())) if padded_height > crop_height else 0
        left = int(torch.randint(0, padded_width - crop_width + 1, ())) if padded_width > crop_width else 0
        top, left = top - pad_height, left - pad_width  # in the unpadded image: may be negative
        image = _window(image, top, left, crop_height, crop_width, self._fill)
        mask = _window(mask, top, left, crop_height, crop_width, IGNORE_INDEX) if mask is not None else None
        return image, mask

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(crop={self.crop}, scale={self.scale}, flip={self.flip}, "
                f"resize={self.resize})")


def _window(tensor: torch.Tensor, top: int, left: int, height: int, width: int,
            fill: torch.Tensor | int) -> torch.Tensor:
    """`tensor[..., top:top + height, left:left + width]` ([C, H, W] or [H, W]) where the window may
    reach outside; outside pixels get `fill` (a [C, 1, 1] tensor of one value per channel, or one
    value for a mask)."""
    rows, cols = tensor.shape[-2:]
    if top >= 0 and left >= 0 and top + height <= rows and left + width <= cols:
        return tensor[..., top:top + height, left:left + width]
    out = torch.empty(tensor.shape[:-2] + (height, width), dtype=tensor.dtype)
    out[...] = fill
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + height, rows), min(left + width, cols)
    if y1 > y0 and x1 > x0:
        out[..., y0 - top:y1 - top, x0 - left:x1 - left] = tensor[..., y0:y1, x0:x1]
    return out


@functools.lru_cache(maxsize=1024)
def nearest_exact_indices(in_size: int, out_size: int) -> torch.Tensor:
    """The source index of each output pixel of a nearest-exact resize of one axis, as torch's
    kernel computes it: min(floor((i + 0.5) · scale), in − 1), in float32, scale = in / out."""
    scale = torch.tensor(in_size, dtype=torch.float32) / out_size
    index = ((torch.arange(out_size, dtype=torch.float32) + 0.5) * scale).floor_().to(torch.int64)
    return index.clamp_(max=in_size - 1)


def train_transforms(
    crop_size: Size | None,
    scale_range: tuple[float, float] | None = (0.5, 2.0),
    flip: bool = True,
    resize: Size | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    finish: bool = True,
) -> TrainAugmentation:
    """The training augmentation (`TrainAugmentation`). `scale_range=None` skips the random scale;
    `crop_size=None` keeps whole images (the FCN reference trains on whole images, batch 1);
    `finish=False` leaves the float conversion and normalisation to `finish_batch`."""
    return TrainAugmentation(crop_size, scale_range, flip, resize, mean, std, finish)
