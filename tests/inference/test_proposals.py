"""Selective-search proposals (ranking, dedupe, determinism, disk cache) and proposal-wise
inference (crops batched, eq. 1 max / eq. 2 sum with zeros outside each box, softmax)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from skipseg.data.shapes import render_shapes_image
from skipseg.core.runtime import Runtime
from skipseg.errors import SkipsegError
from skipseg.inference import proposals as proposals_module
from skipseg.inference.aggregate import clip_boxes, proposal_probs, proposal_scores
from skipseg.inference.proposals import extend_boxes, proposals, rank_boxes
from skipseg.models.registry import build_model

CPU = Runtime(torch.device("cpu"), None, False)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.ascontiguousarray(render_shapes_image(0, 3, 96)[0][:71])  # 71 x 96, odd


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lo, hi = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def test_proposals_ranked_deduplicated_deterministic(image) -> None:
    boxes = proposals(image, k=25)
    assert boxes.dtype == np.int64 and boxes.shape[1] == 4 and 5 <= len(boxes) <= 25
    assert boxes[0].tolist() == [0, 0, 96, 71]  # the whole image, always first
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 96).all() and (boxes[:, 3] <= 71).all()
    assert (boxes[:, 2] - boxes[:, 0] >= 10).all() and (boxes[:, 3] - boxes[:, 1] >= 10).all()
    iou = _iou(boxes, boxes)
    assert (iou[~np.eye(len(boxes), dtype=bool)] <= 0.9).all()  # no near-duplicates
    assert np.array_equal(proposals(image, k=25), boxes)  # OpenCV's random ranks are seeded
    assert np.array_equal(proposals(image, k=5), boxes[:5])


def test_rank_boxes() -> None:
    raw = np.array([[0, 0, 30, 30], [1, 0, 30, 30], [5, 5, 8, 40], [10, 10, 40, 40], [0, 0, 100, 50]])
    assert rank_boxes(raw, (50, 100), k=10).tolist() == [[0, 0, 100, 50], [0, 0, 30, 30], [10, 10, 40, 40]]
    assert rank_boxes(raw, (50, 100), k=2).tolist() == [[0, 0, 100, 50], [0, 0, 30, 30]]


def test_whole_image_modes_and_minimum_area() -> None:
    raw = np.array([[0, 0, 30, 30], [10, 10, 40, 40], [60, 5, 75, 20], [50, 25, 95, 49]])
    size = (50, 100)
    whole = [0, 0, 100, 50]
    assert rank_boxes(raw, size, k=2, whole_image="counted").tolist() == [whole, [0, 0, 30, 30]]
    assert rank_boxes(raw, size, k=2, whole_image="extra").tolist() == [whole, [0, 0, 30, 30], [10, 10, 40, 40]]
    assert rank_boxes(raw, size, k=2, whole_image="off").tolist() == [[0, 0, 30, 30], [10, 10, 40, 40]]
    # min_area: the 15 x 15 box (225 px) goes below 226, the 45 x 24 one (1080) stays
    kept = rank_boxes(raw, size, k=10, whole_image="off", min_area=226).tolist()
    assert kept == [[0, 0, 30, 30], [10, 10, 40, 40], [50, 25, 95, 49]]
    with pytest.raises(SkipsegError, match="whole_image: 'both'"):
        rank_boxes(raw, size, k=2, whole_image="both")


def test_extension_scales_about_the_centre_and_clips() -> None:
    boxes = np.array([[10, 10, 30, 20], [0, 0, 10, 10], [90, 40, 100, 50]])
    # 20 x 10 -> 24 x 12 about (20, 15); the corner boxes grow 12 x 12 and are clipped to 100 x 50
    assert extend_boxes(boxes, 1.2, (50, 100)).tolist() == [[8, 9, 32, 21], [0, 0, 11, 11], [89, 39, 100, 50]]
    assert extend_boxes(boxes, 1.0, (50, 100)).tolist() == boxes.tolist()
    with pytest.raises(SkipsegError, match="must be >= 1"):
        extend_boxes(boxes, 0.9, (50, 100))


def test_proposals_cache(image, tmp_path, monkeypatch) -> None:
    path = tmp_path / "img.png"
    Image.fromarray(image).save(path)
    first = proposals(path, k=20, cache_dir=tmp_path / "cache")
    assert np.array_equal(first, proposals(image, k=20))  # a file and its pixels: the same boxes
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("selective search ran although the boxes are cached")

    monkeypatch.setattr(proposals_module, "selective_search", fail)
    assert np.array_equal(proposals(path, k=20, cache_dir=tmp_path / "cache"), first)
    with pytest.raises(AssertionError):  # other settings, other key
        proposals(path, k=21, cache_dir=tmp_path / "cache")
    os.utime(path, ns=(1, 1))  # a changed file (mtime) is computed again
    with pytest.raises(AssertionError):
        proposals(path, k=20, cache_dir=tmp_path / "cache")


def test_proposals_errors(tmp_path) -> None:
    with pytest.raises(SkipsegError, match="missing.jpg: image file not found"):
        proposals(tmp_path / "missing.jpg")
    with pytest.raises(SkipsegError, match="proposals.k"):
        proposals(np.zeros((20, 20, 3), np.uint8), k=0)
    with pytest.raises(SkipsegError, match="method"):
        proposals(np.zeros((20, 20, 3), np.uint8), method="edgeboxes")


class PixelScores(nn.Module):
    """A 1x1 conv: per-pixel scores, so crops of the right size give exact expected maps."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, classes, 1)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return self.conv(x)


def test_max_and_sum_aggregation_exact() -> None:
    torch.manual_seed(1)
    image = torch.randn(3, 37, 53)
    boxes = np.array([[0, 0, 20, 16], [10, 5, 30, 21], [33, 20, 53, 36]])  # all 20 x 16: no resizing
    model = PixelScores()
    with torch.no_grad():
        scores = model.conv(image[None])[0]  # [C, H, W]
    maps = torch.zeros(3, *scores.shape)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        maps[i, :, y0:y1, x0:x1] = scores[:, y0:y1, x0:x1]  # G_i: zeros outside the box
    got_max = proposal_scores(model, image, boxes, CPU, "max", batch_size=2, size=(16, 20))
    got_sum = proposal_scores(model, image, boxes, CPU, "sum", batch_size=2, size=(16, 20))
    assert torch.allclose(got_max, maps.max(0).values, atol=1e-5)
    assert torch.allclose(got_sum, maps.sum(0), atol=1e-5)
    assert model.calls == [(2, 3, 16, 20), (1, 3, 16, 20)] * 2  # one forward per batch of crops
    probs = proposal_probs(model, image, boxes, CPU, "max", size=(16, 20))
    assert torch.allclose(probs, maps.max(0).values.softmax(0), atol=1e-5)
    whole = proposal_scores(model, image, [[0, 0, 53, 37]], CPU, "max", size=(37, 53))  # covers all: no 0
    assert torch.allclose(whole, scores, atol=1e-5)


def test_batched_equals_one_at_a_time_for_a_fixed_input_model() -> None:
    torch.manual_seed(0)
    model = build_model("deconvnet", width=1 / 64, num_classes=5).eval()
    calls: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda mod, args: calls.append(tuple(args[0].shape)))
    image = torch.randn(3, 61, 83)
    boxes = [[0, 0, 83, 61], [5, 3, 40, 30], [30, 20, 90, 70], [60, 40, 61, 41]]  # one clipped, one 1x1
    batched = proposal_probs(model, image, boxes, CPU, batch_size=4)
    assert calls == [(4, 3, 224, 224)]  # model.input_size, one forward
    single = proposal_probs(model, image, boxes, CPU, batch_size=1)
    assert len(calls) == 5
    assert batched.shape == (5, 61, 83) and torch.allclose(batched, single, atol=1e-4)
    assert torch.allclose(batched.sum(0), torch.ones(61, 83), atol=1e-5)
    fast = Runtime(torch.device("cpu"), None, True)  # channels_last inputs
    assert torch.allclose(proposal_probs(model.to(memory_format=torch.channels_last), image, boxes, fast), batched,
                          atol=1e-4)


def test_aggregate_errors() -> None:
    model, image = PixelScores(), torch.zeros(3, 10, 10)
    assert clip_boxes([[-5, -5, 3.2, 4.7], [12, 0, 20, 5]], 10, 10).tolist() == [[0, 0, 4, 5]]
    with pytest.raises(SkipsegError, match="no box overlaps"):
        proposal_probs(model, image, [[12, 0, 20, 5]], CPU)
    with pytest.raises(SkipsegError, match="aggregate"):
        proposal_probs(model, image, [[0, 0, 5, 5]], CPU, aggregate="mean")
    with pytest.raises(SkipsegError, match="batch_size"):
        proposal_probs(model, image, [[0, 0, 5, 5]], CPU, batch_size=0)
