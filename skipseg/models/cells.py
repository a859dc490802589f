"""The G×G grid of image cells that box-wise prediction scores, and a cell's target label.

Along a side of H pixels, cell i covers pixels round(i·H/G) ≤ y < round((i+1)·H/G) (round half up):
the cells whose centres ((i + ½)·H/G − ½) are where `align_corners=False` interpolation puts its G
samples. When G divides H each cell has H/G pixels; otherwise ⌊H/G⌋ or ⌈H/G⌉, spread evenly; for
G > H some cells hold no pixel and are void.
"""
from __future__ import annotations

import torch
from torch import Tensor

from skipseg.data.palette import IGNORE_INDEX


def cell_index(length: int, cells: int, device: torch.device | str = "cpu") -> Tensor:
    """`[length]` int64: the cell of each pixel along a side (boundaries round(i·length/cells))."""
    i = torch.arange(1, cells, device=device, dtype=torch.int64)
    bounds = (2 * i * length + cells) // (2 * cells)  # floor(i·L/G + ½) in integers
    return torch.bucketize(torch.arange(length, device=device), bounds, right=True)


def cells_mirror_symmetric(length: int, cells: int) -> bool:
    """Whether the cells along a side of `length` pixels are the mirror image of each other (cell j
    of the flipped side covers the pixels of cell G-1-j): always for odd G; for even G unless some
    boundary i·L/G falls exactly on a half pixel, which rounds up on both sides of the centre
    (L = 10, G = 4: cells of 3, 2, 3, 2 pixels)."""
    index = cell_index(length, cells)
    return bool(torch.equal(index.flip(0), cells - 1 - index))


def centre_label(mask: Tensor, grid: tuple[int, int], num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """`mask [N, H, W]` → `[N, G_h, G_w]`: each cell takes the label of the pixel holding its centre
    ((i + ½)·H/G along a side); a void centre, or a cell that holds no pixel, is `ignore_index`."""
    _, h, w = mask.shape
    rows, cols = (_centre_pixels(length, cells, mask.device) for length, cells in ((h, grid[0]), (w, grid[1])))
    picked = mask[:, rows.clamp(min=0)][:, :, cols.clamp(min=0)]  # [N, G_h, G_w]
    void = (picked < 0) | (picked >= num_classes) | (rows < 0)[None, :, None] | (cols < 0)[None, None, :]
    return picked.masked_fill(void, ignore_index)


def _centre_pixels(length: int, cells: int, device: torch.device | str) -> Tensor:
    """`[cells]` int64: the pixel holding each cell's centre, -1 where that pixel is another cell's."""
    centre = (2 * torch.arange(cells, device=device) + 1) * length // (2 * cells)  # floor((i + ½)·L/G)
    owner = cell_index(length, cells, device)[centre.clamp(max=length - 1)]
    return torch.where(owner == torch.arange(cells, device=device), centre, torch.full_like(centre, -1))


def majority_vote(mask: Tensor, grid: tuple[int, int], num_classes: int, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """`mask [N, H, W]` (labels in [0, C), anything else void) → `[N, G_h, G_w]` int64 cell labels.

    A cell gets the most frequent class of its non-void pixels (ties: the lowest class); a cell
    whose pixels are more than half void, or that holds no pixel, is `ignore_index`. One bincount
    over (image, cell, label), no loop over pixels or cells.
    """
    n, h, w = mask.shape
    gh, gw = grid
    c = num_classes
    cells = cell_index(h, gh, mask.device)[:, None] * gw + cell_index(w, gw, mask.device)[None, :]  # [H, W]
    labels = torch.where((mask >= 0) & (mask < c), mask, torch.full_like(mask, c))  # void → bin C
    images = torch.arange(n, device=mask.device).view(n, 1, 1) * (gh * gw)
    flat = ((images + cells) * (c + 1) + labels).reshape(-1)
    counts = torch.bincount(flat, minlength=n * gh * gw * (c + 1)).view(n, gh, gw, c + 1)
    valid, void = counts[..., :c].sum(-1), counts[..., c]
    target = counts[..., :c].argmax(-1)
    return target.masked_fill_((void > valid) | (valid == 0), ignore_index)


CELL_LABELS = {"majority": majority_vote, "centre": centre_label}  # a cell's target (`model.cell_label`)
