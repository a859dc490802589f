"""Joint transforms: no invented labels, image and mask stay aligned, padding, odd sizes, seeding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from skipseg.data.augmentation import nearest_exact_indices, train_transforms
from skipseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RandomScale,
    Resize,
    denormalize,
    eval_transforms,
    normalize,
)

# label k ↔ colour COLOURS[k]: far apart, so any mix-up between image and mask shows
COLOURS = torch.tensor(
    [[20, 20, 20], [230, 40, 40], [40, 230, 40], [40, 40, 230], [230, 230, 40], [200, 40, 230]]
)


def blocky_pair(height: int = 90, width: int = 122, seed: int = 0):
    """An asymmetric layout of large flat regions; the image colour at each pixel encodes its label."""
    g = torch.Generator().manual_seed(seed)

    def randint(low: int, high: int) -> int:
        return int(torch.randint(low, high, (), generator=g))

    label = torch.zeros(height, width, dtype=torch.int64)
    for k in range(1, len(COLOURS)):
        h, w = randint(height // 5, height // 2), randint(width // 5, width // 2)
        top, left = randint(0, height - h), randint(0, width - w)
        label[top : top + h, left : left + w] = k
    label[: height // 3, : width // 6] = 255  # a void region too
    image = COLOURS[label.clamp(max=len(COLOURS) - 1)].permute(2, 0, 1).to(torch.uint8)
    image[:, label == 255] = 128
    return tv_tensors.Image(image), tv_tensors.Mask(label)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    return (denormalize(image) * 255).round().to(torch.int64)


def interior(mask: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Pixels whose (2r+1)² neighbourhood holds one label only: away from region edges, and from the
    crop's border (whose neighbours outside the crop were blended in but are gone)."""
    padded = torch.nn.functional.pad(mask[None, None].float(), (radius,) * 4, value=-1.0)
    k = 2 * radius + 1
    high = torch.nn.functional.max_pool2d(padded, k, stride=1)[0, 0]
    low = -torch.nn.functional.max_pool2d(-padded, k, stride=1)[0, 0]
    return high == low


@pytest.mark.parametrize("size", [(45, 61), (13, 200), (90, 122)])
@pytest.mark.parametrize("crop", [32, (50, 71), 128])
def test_no_invented_label_values(size, crop):
    values = torch.tensor([0, 3, 7, 200])
    transform = train_transforms(crop, scale_range=(0.3, 2.5))
    for seed in range(8):
        torch.manual_seed(seed)
        mask = values[torch.randint(0, 4, size)]
        image = torch.randint(0, 256, (3, *size), dtype=torch.uint8)
        out_image, out_mask = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        assert out_mask.dtype == torch.int64 and out_image.dtype == torch.float32
        assert out_mask.shape == out_image.shape[1:] == _hw(crop)
        assert set(out_mask.unique().tolist()) <= {0, 3, 7, 200, 255}


def _hw(size):
    return (size, size) if isinstance(size, int) else size


def test_resize_and_scale_use_nearest_for_masks():
    """A 2-value checkerboard would grow in-between values under any other interpolation."""
    mask = tv_tensors.Mask((torch.arange(45)[:, None] + torch.arange(61)[None]) % 2 * 9 + 1)
    image = tv_tensors.Image(torch.zeros(3, 45, 61, dtype=torch.uint8))
    for transform in (Resize((100, 37)), Resize(7), RandomScale((0.37, 1.9))):
        for _ in range(5):
            _, out = transform(image, mask)
            assert set(out.unique().tolist()) <= {1, 10}
    _, out = eval_transforms(resize=(23, 30))(image, mask)
    assert out.shape == (23, 30) and set(out.unique().tolist()) <= {1, 10}


@pytest.mark.parametrize("seed", range(12))
def test_image_and_mask_stay_aligned(seed):
    image, mask = blocky_pair(seed=seed)
    transform = train_transforms((64, 80), scale_range=(0.5, 2.0), flip=True)
    torch.manual_seed(seed)
    out_image, out_mask = transform(image, mask)
    colours = to_uint8(out_image)
    check = interior(out_mask) & (out_mask != 255)
    assert check.sum() > 500
    expected = COLOURS[out_mask[check]].T
    assert (colours[:, check] - expected).abs().max() <= 3
    # void (255) inside the image keeps its grey; crop padding is the mean pixel
    void = interior(out_mask) & (out_mask == 255)
    pixel_colours = colours[:, void].T.tolist()
    mean = [round(255 * m) for m in IMAGENET_MEAN]
    assert all(abs(c[0] - 128) <= 3 or max(abs(a - b) for a, b in zip(c, mean)) <= 3 for c in pixel_colours)


def test_flip_moves_image_and_mask_together():
    image, mask = blocky_pair(seed=3)
    transform = train_transforms((90, 122), scale_range=None, flip=True)
    seen = set()
    for seed in range(10):
        torch.manual_seed(seed)
        out_image, out_mask = transform(image, mask)
        flipped = torch.equal(out_mask, mask.flip(-1))
        assert flipped or torch.equal(out_mask, mask)
        reference = image.flip(-1) if flipped else image
        assert (to_uint8(out_image) - reference.to(torch.int64)).abs().max() <= 1
        seen.add(flipped)
    assert seen == {True, False}


@pytest.mark.parametrize("size", [(20, 30), (45, 61)])
def test_crop_padding_is_mean_pixel_and_void(size):
    height, width = size
    image = tv_tensors.Image(torch.randint(0, 256, (3, height, width), dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.randint(0, 5, (height, width)))
    transform = train_transforms(64, scale_range=None, flip=False)
    torch.manual_seed(0)
    out_image, out_mask = transform(image, mask)
    assert out_image.shape == (3, 64, 64) and out_mask.shape == (64, 64)
    padded = out_mask == 255
    assert int(padded.sum()) == 64 * 64 - height * width
    # the image's own pixels are all there, in one block, with their labels
    rows, cols = torch.nonzero(~padded, as_tuple=True)
    top, left = int(rows.min()), int(cols.min())
    assert torch.equal(out_mask[top : top + height, left : left + width], mask)
    inside = to_uint8(out_image)[:, top : top + height, left : left + width]
    assert (inside - image.to(torch.int64)).abs().max() <= 1
    # the padding: mean pixel (≈ 0 after normalisation), label 255
    pad_pixels = denormalize(out_image)[:, padded]
    assert torch.allclose(pad_pixels, torch.tensor(IMAGENET_MEAN)[:, None], atol=1 / 255)
    assert out_image[:, padded].abs().max() < 0.01


def test_eval_transforms_native_odd_size():
    image = tv_tensors.Image(torch.randint(0, 256, (3, 45, 61), dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.randint(0, 21, (45, 61)))
    out_image, out_mask = eval_transforms()(image, mask)
    assert out_image.shape == (3, 45, 61) and out_image.dtype == torch.float32
    assert out_mask.dtype == torch.int64 and torch.equal(out_mask, mask)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    expected = (image.float() / 255 - mean) / std
    assert torch.allclose(out_image, expected, atol=1e-5)
    assert torch.allclose(out_image, normalize(image), atol=1e-5)


def test_train_transforms_odd_size_resize_option():
    image, mask = blocky_pair(45, 61)
    out_image, out_mask = train_transforms(33, scale_range=(0.9, 1.1), resize=(51, 47))(image, mask)
    assert out_image.shape == (3, 33, 33) and out_mask.shape == (33, 33)
    out_image, out_mask = eval_transforms(resize=250)(image, mask)
    assert out_image.shape == (3, 250, 250) and out_mask.shape == (250, 250)


def test_seeding_torch_makes_it_reproducible():
    image, mask = blocky_pair(seed=5)
    transform = train_transforms(48)
    runs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        runs.append([transform(image, mask) for _ in range(4)])
    for (a_img, a_mask), (b_img, b_mask) in zip(runs[0], runs[1]):
        assert torch.equal(a_img, b_img) and torch.equal(a_mask, b_mask)
    assert any(not torch.equal(a[1], c[1]) for a, c in zip(runs[0], runs[2]))


def test_accepts_pil_numpy_and_no_mask():
    rgb = np.random.default_rng(0).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    label = np.random.default_rng(1).integers(0, 21, (45, 61)).astype(np.uint8)
    transform = eval_transforms()
    from_pil = transform(Image.fromarray(rgb), Image.fromarray(label, mode="P"))
    from_numpy = transform(rgb, label)
    for out_image, out_mask in (from_pil, from_numpy):
        assert isinstance(out_image, tv_tensors.Image) and isinstance(out_mask, tv_tensors.Mask)
        assert out_mask.dtype == torch.int64
        np.testing.assert_array_equal(out_mask.numpy(), label)
    assert torch.equal(from_pil[0], from_numpy[0])
    only_image, nothing = transform(rgb)
    assert nothing is None and torch.equal(only_image, from_numpy[0])


def test_denormalize_round_trip_and_batches():
    image = torch.randint(0, 256, (2, 3, 9, 11), dtype=torch.uint8)
    back = denormalize(normalize(image))
    assert back.shape == (2, 3, 9, 11)
    assert torch.allclose(back, image.float() / 255, atol=1e-5)
    assert 0 <= float(denormalize(torch.full((3, 4, 4), 50.0)).max()) <= 1


def test_bad_arguments():
    with pytest.raises(ValueError):
        train_transforms(0)
    with pytest.raises(ValueError):
        train_transforms(32, scale_range=(2.0, 1.0))


def v2_reference(crop, scale_range, flip, resize):
    """The training augmentation as a torchvision v2 Compose: what `train_transforms` must equal."""
    from torchvision.transforms import v2

    fill = {tv_tensors.Image: tuple(round(255 * m) for m in IMAGENET_MEAN), tv_tensors.Mask: 255}
    steps = [v2.ToDtype({tv_tensors.Image: torch.uint8, "others": None}, scale=True)]
    steps += [Resize(resize)] if resize is not None else []
    steps += [RandomScale(scale_range)] if scale_range is not None else []
    steps += [v2.RandomCrop(crop, pad_if_needed=True, fill=fill)] if crop is not None else []
    steps += [v2.RandomHorizontalFlip(p=0.5)] if flip else []
    steps += [v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True),
              v2.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))]
    return v2.Compose(steps)


@pytest.mark.parametrize("crop, scale_range, flip, resize", [
    ((32, 32), (0.5, 2.0), True, None),     # crops of a scaled image, padded when it shrinks below 32
    ((50, 71), (0.3, 2.5), True, None),     # non-square, both sides padded at times
    ((64, 64), None, True, (71, 71)),       # DeconvNet's: resize, crop, flip
    ((45, 61), (0.75, 1.25), False, (51, 47)),
    (None, (0.5, 1.5), True, None),         # whole images
])
def test_train_transforms_equal_the_v2_compose_draw_for_draw(crop, scale_range, flip, resize):
    """Same random draws, same order, same tensors as the v2 pipeline, so a seed gives the same
    augmentation whichever of the two runs it (and a resumed run replays it)."""
    fast = train_transforms(crop, scale_range=scale_range, flip=flip, resize=resize)
    reference = v2_reference(crop, scale_range, flip, resize)
    for seed in range(40):
        image, mask = blocky_pair(45 + seed % 3, 61 - seed % 5, seed=seed)
        torch.manual_seed(seed)
        got = fast(image, mask)
        after_fast = torch.rand(())
        torch.manual_seed(seed)
        want = reference(image, mask)
        assert torch.equal(torch.rand(()), after_fast)  # the RNG advanced by exactly the same draws
        assert isinstance(got[0], tv_tensors.Image) and isinstance(got[1], tv_tensors.Mask)
        assert got[0].dtype == want[0].dtype and got[1].dtype == want[1].dtype == torch.int64
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        torch.manual_seed(seed)  # uint8 labels, as the datasets give them: the same int64 output
        got8 = fast(image, tv_tensors.Mask(mask.to(torch.uint8)))
        assert got8[1].dtype == torch.int64 and torch.equal(got8[0], want[0]) and torch.equal(got8[1], want[1])
    float_image = image.float() / 255  # a float input is converted to uint8 first, as ToDtype does
    torch.manual_seed(0)
    got = fast(tv_tensors.Image(float_image), mask)
    torch.manual_seed(0)
    assert torch.equal(got[0], reference(tv_tensors.Image(float_image), mask)[0])


def test_mask_resize_gathers_what_the_nearest_exact_kernel_gives():
    """The uint8-label resize takes rows and columns by `nearest_exact_indices`: the kernel's pixels."""
    pairs = [(i, o) for i in range(1, 40) for o in range(1, 90)] + [(375, 741), (500, 251), (64, 80), (71, 53)]
    for in_size, out_size in pairs:
        line = torch.arange(in_size, dtype=torch.float32)[None, None, None]  # [1, 1, 1, in]
        kernel = torch.nn.functional.interpolate(line, size=(1, out_size), mode="nearest-exact")[0, 0, 0]
        assert torch.equal(nearest_exact_indices(in_size, out_size), kernel.to(torch.int64)), (in_size, out_size)


@pytest.mark.parametrize("size", [(45, 61), (64, 64)])
def test_batch_finish_equals_the_finished_items(size):
    """`finish=False` + `finish_batch` on the stacked batch: the full pipeline's items, to the bit."""
    images = [torch.randint(0, 256, (3, *size), dtype=torch.uint8) for _ in range(4)]
    masks = [torch.randint(0, 6, size, dtype=torch.uint8) for _ in range(4)]
    full = train_transforms(48, scale_range=(0.6, 1.7), flip=True)
    raw = train_transforms(48, scale_range=(0.6, 1.7), flip=True, finish=False)
    expected, crops = [], []
    for seed, (image, mask) in enumerate(zip(images, masks)):
        torch.manual_seed(seed)
        expected.append(full(tv_tensors.Image(image), tv_tensors.Mask(mask)))
        torch.manual_seed(seed)
        crops.append(raw(tv_tensors.Image(image), tv_tensors.Mask(mask)))
    assert all(c[0].dtype == torch.uint8 and c[1].dtype == torch.uint8 for c in crops)
    batch_images, batch_masks = raw.finish_batch(torch.stack([c[0] for c in crops]), torch.stack([c[1] for c in crops]))
    assert batch_masks.dtype == torch.int64
    assert torch.equal(batch_images, torch.stack([e[0] for e in expected]))
    assert torch.equal(batch_masks, torch.stack([e[1] for e in expected]))
