"""Test-time flips and proposal resizing checked against what they must compute, by hand:
flip-TTA = ½·(p(x) + flip(p(flip x))) for pixel and grid models at sides that are not multiples of G;
crop → model input → back to the box exact on a linear ramp (where bilinear interpolation is exact)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skipseg.core.runtime import Runtime
from skipseg.errors import SkipsegError
from skipseg.inference.aggregate import crop_batch, proposal_scores
from skipseg.inference.predictor import predict_probs
from skipseg.models.cells import cell_index, cells_mirror_symmetric

CPU = Runtime(torch.device("cpu"), None, False)


class PositionPixels(nn.Module):
    """Scores that depend on the pixel's position and on the image: not mirror-invariant."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-1, 1, x.shape[-1])
        return self.conv(x) + ramp * torch.arange(4.0).view(1, 4, 1, 1)


class PositionCells(PositionPixels):
    """A box-wise grid model: the pixel scores averaged over each of the G×G image cells."""

    def __init__(self, grid: int) -> None:
        super().__init__()
        self.output_grid = (grid, grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = super().forward(x)  # [N, 4, H, W]
        g = self.output_grid[0]
        rows, cols = cell_index(x.shape[-2], g), cell_index(x.shape[-1], g)
        onehot_r = F.one_hot(rows, g).float()  # [H, G]
        onehot_c = F.one_hot(cols, g).float()  # [W, G]
        sums = torch.einsum("nchw,hi,wj->ncij", pixels, onehot_r, onehot_c)
        return sums / torch.einsum("hi,wj->ij", onehot_r, onehot_c)


@pytest.mark.parametrize("model", [PositionPixels(), PositionCells(9)], ids=["pixels", "cells G=9"])
def test_flip_tta_is_the_mean_of_the_image_and_its_mirror_flipped_back(model):
    images = torch.randn(2, 3, 45, 61)  # 61 is not a multiple of 9
    with torch.no_grad():
        plain = model(images).softmax(1)
        mirrored = model(images.flip(-1)).softmax(1).flip(-1)
    got = predict_probs(model, images, CPU, flip=True)
    assert torch.allclose(got, 0.5 * (plain + mirrored), atol=1e-6)
    assert not torch.allclose(plain, mirrored, atol=1e-3)  # the flip matters for this model


def test_flip_tta_refuses_grids_whose_cells_are_not_mirror_images():
    assert cell_index(10, 4).bincount().tolist() == [3, 2, 3, 2]
    assert not cells_mirror_symmetric(10, 4)
    assert all(cells_mirror_symmetric(length, 9) for length in range(9, 200))  # odd G: always
    assert cells_mirror_symmetric(64, 8) and not cells_mirror_symmetric(61, 8)  # odd width, even G: the centre
    with pytest.raises(SkipsegError, match="4 cells across a 10-pixel-wide image are not mirror images"):
        predict_probs(PositionCells(4), torch.randn(1, 3, 12, 10), CPU, flip=True)


class Identity(nn.Module):
    input_size = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _ramp(height: int, width: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    return torch.stack([0.1 * x + 0.02 * y, -0.03 * x + 0.2 * y, 0.05 * x - 0.07 * y + 1.0])  # [3, H, W]


@pytest.mark.parametrize("size", [(32, 40), (224, 224)])
def test_crop_resize_and_back_is_exact_on_a_linear_ramp(size):
    """roi_align(aligned=True) samples the box at the output cells' centres, as F.interpolate of the
    crop does, and the back-resize lands on the box's pixels: on a ramp both are exact, while a
    half-pixel slip (aligned=False) moves every value by half a slope (0.05 here)."""
    image = _ramp(50, 70)
    box = (7, 5, 30, 22)  # x0, y0, x1, y1: 23 x 17, away from the border, enlarged to `size`
    x0, y0, x1, y1 = box
    crop = crop_batch(image, torch.tensor([box]), size)[0]  # [3, h, w]
    ys = y0 + (torch.arange(size[0]) + 0.5) * (y1 - y0) / size[0] - 0.5  # cell centres in image pixels
    xs = x0 + (torch.arange(size[1]) + 0.5) * (x1 - x0) / size[1] - 0.5
    expected = torch.stack([0.1 * xs[None] + 0.02 * ys[:, None], -0.03 * xs[None] + 0.2 * ys[:, None],
                            0.05 * xs[None] - 0.07 * ys[:, None] + 1.0])
    assert torch.allclose(crop, expected, atol=1e-5)
    scores = proposal_scores(Identity(), image, [box], CPU, "sum", size=size)  # G_i: back in image space
    assert torch.allclose(scores[:, y0:y1, x0:x1], image[:, y0:y1, x0:x1], atol=1e-5)
    assert not scores[:, :y0].any() and not scores[:, :, x1:].any()  # zeros outside the box
