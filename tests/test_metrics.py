"""skipseg.metrics against hand-computed confusion matrices and scores (FCN reference scoring)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from skipseg.data.palette import VOC_CLASSES
from skipseg.metrics import ConfusionMatrix, CrossEntropyMeter, format_table, scores_from_matrix

V = 255  # void


def pairs_to_tensors(pairs):
    """[(gt, pred), ...] → (pred, target) 1-D int64 tensors."""
    gt = torch.tensor([g for g, _ in pairs], dtype=torch.int64)
    pred = torch.tensor([p for _, p in pairs], dtype=torch.int64)
    return pred, gt


# 3 classes, 10 valid pixels and 2 void ones, as (gt, pred):
HAND_PAIRS = (
    [(0, 0)] * 4 + [(0, 1)]
    + [(1, 1)] * 2 + [(1, 0)] + [(1, 2)]
    + [(2, 2)]
    + [(V, 0), (V, 2)]
)
# rows = gt, columns = pred; row sums t = (5, 4, 1), column sums (5, 3, 2), diagonal (4, 2, 1)
HAND_MATRIX = [[4, 1, 0], [1, 2, 1], [0, 0, 1]]
# IoU_0 = 4/(5+5-4) = 2/3, IoU_1 = 2/(4+3-2) = 2/5, IoU_2 = 1/(1+2-1) = 1/2
HAND_IOU = [2 / 3, 2 / 5, 1 / 2]


def test_hand_example_matrix_and_scores():
    pred, gt = pairs_to_tensors(HAND_PAIRS)
    cm = ConfusionMatrix(3)
    cm.update(pred, gt)
    assert cm.mat.dtype == torch.int64
    assert cm.mat.tolist() == HAND_MATRIX
    s = cm.compute(["a", "b", "c"])
    assert s["pixel_acc"] == pytest.approx(7 / 10)
    assert s["mean_acc"] == pytest.approx((4 / 5 + 2 / 4 + 1 / 1) / 3)  # 23/30
    assert s["per_class_acc"] == pytest.approx([4 / 5, 1 / 2, 1.0])
    assert s["per_class_iou"] == pytest.approx(HAND_IOU)
    assert s["mean_iou"] == pytest.approx(47 / 90)  # (2/3 + 2/5 + 1/2) / 3
    assert s["fw_iou"] == pytest.approx(163 / 300)  # (5·2/3 + 4·2/5 + 1·1/2) / 10
    assert s["class_names"] == ["a", "b", "c"]
    assert s["num_images"] == 1
    assert s["confusion"] == HAND_MATRIX
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou"):
        assert type(s[key]) is float
    assert all(type(v) is float for v in s["per_class_iou"])
    assert all(type(v) is int for row in s["confusion"] for v in row)


def test_scores_from_matrix_accepts_numpy_and_tensor():
    for mat in (np.array(HAND_MATRIX), torch.tensor(HAND_MATRIX)):
        s = scores_from_matrix(mat)
        assert s["per_class_iou"] == pytest.approx(HAND_IOU)
        assert s["class_names"] == ["class_0", "class_1", "class_2"]
        assert s["num_images"] is None


def test_same_counts_for_every_integer_dtype_and_2d_shape():
    pred, gt = pairs_to_tensors(HAND_PAIRS)  # 12 pixels → 3×4 image
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        # int8 cannot hold 255: the void pixels become -1 there, which is ignored too
        g = gt.clone()
        if dtype == torch.int8:
            g[g == V] = -1
        cm = ConfusionMatrix(3)
        cm.update(pred.to(dtype).view(3, 4), g.to(dtype).view(3, 4))
        assert cm.mat.tolist() == HAND_MATRIX, dtype
        assert cm.num_images == 1
    cm = ConfusionMatrix(3)
    cm.update(pred.numpy().astype(np.uint8), gt.numpy().astype(np.uint8))  # numpy arrays too
    assert cm.mat.tolist() == HAND_MATRIX


def test_absent_classes():
    # C = 4. gt [0,0,1,1], pred [0,2,1,1]: class 2 predicted but absent from the ground truth,
    # class 3 in neither.
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 2, 1, 1]), torch.tensor([0, 0, 1, 1]))
    assert cm.mat.tolist() == [[1, 0, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    s = cm.compute()
    # IoU_0 = 1/(2+1-1) = 1/2, IoU_1 = 2/(2+2-2) = 1, IoU_2 = 0/(0+1-0) = 0, IoU_3 = 0/0
    assert s["per_class_iou"][:3] == pytest.approx([0.5, 1.0, 0.0])
    assert s["per_class_iou"][3] is None
    assert s["mean_iou"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)  # class 2 counts, 3 does not
    # accuracy: classes 2 and 3 are absent from the ground truth → left out
    assert s["per_class_acc"][:2] == pytest.approx([0.5, 1.0])
    assert s["per_class_acc"][2:] == [None, None]
    assert s["mean_acc"] == pytest.approx(0.75)
    assert s["pixel_acc"] == pytest.approx(3 / 4)
    assert s["fw_iou"] == pytest.approx((2 * 0.5 + 2 * 1.0) / 4)


def test_void_and_out_of_range_targets_are_ignored():
    pred, gt = pairs_to_tensors(HAND_PAIRS)
    extra_gt = torch.tensor([V, V, V, 3, 7, 100, -1, -5])
    rng = np.random.default_rng(0)
    for _ in range(3):
        extra_pred = torch.from_numpy(rng.integers(0, 3, size=extra_gt.numel()))
        cm = ConfusionMatrix(3)
        cm.update(torch.cat([pred, extra_pred]), torch.cat([gt, extra_gt]))
        assert cm.mat.tolist() == HAND_MATRIX
    # changing the prediction on the void pixels of the hand example changes nothing
    void = gt == V
    for value in range(3):
        changed = pred.clone()
        changed[void] = value
        cm = ConfusionMatrix(3)
        cm.update(changed, gt)
        assert cm.mat.tolist() == HAND_MATRIX


def test_255_stays_void_with_more_than_255_classes():
    gt, pred = [255, 299, 256, 0, 300], [1, 299, 255, 0, 5]
    for dtype in (torch.int16, torch.int32, torch.int64):
        cm = ConfusionMatrix(300)
        cm.update(torch.tensor(pred, dtype=dtype), torch.tensor(gt, dtype=dtype))
        nz = cm.mat.nonzero().tolist()
        assert nz == [[0, 0], [256, 255], [299, 299]] and cm.mat.sum() == 3
    cm = ConfusionMatrix(200)  # int8 target (−128..127) with more classes than it can hold
    cm.update(torch.tensor([5, 6, 7]), torch.tensor([-128, 127, -1], dtype=torch.int8))
    assert cm.mat.nonzero().tolist() == [[127, 6]]


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64])
@pytest.mark.parametrize("num_classes", [2, 21, 127, 128, 200, 255, 256, 300])
def test_every_integer_dtype_against_a_plain_count(dtype, num_classes):
    """Each target dtype, with C below, at and above its range: the same counts as a plain loop."""
    info = torch.iinfo(dtype)
    generator = torch.Generator().manual_seed(num_classes)
    low, high = max(info.min, -3), min(info.max, num_classes + 3)
    target = torch.randint(low, high + 1, (500,), generator=generator).to(dtype)
    target[:5] = torch.tensor([low, high, 0, min(255, info.max), min(num_classes - 1, info.max)]).to(dtype)
    pred = torch.randint(0, num_classes, (500,), generator=generator)
    expected = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for t, p in zip(target.tolist(), pred.tolist()):
        if 0 <= t < num_classes and t != 255:
            expected[t, p] += 1
    cm = ConfusionMatrix(num_classes)
    cm.update(pred, target)
    assert torch.equal(cm.mat, expected)


def test_prediction_outside_range_is_an_error():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        cm.update(torch.tensor([-1, 0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError):  # even on a void pixel
        cm.update(torch.tensor([0, 255], dtype=torch.uint8), torch.tensor([0, 255], dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError):
        cm.update(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    assert cm.mat.sum() == 0 and cm.num_images == 0  # failed updates left nothing behind


def test_one_class_only():
    cm = ConfusionMatrix(1)
    cm.update(torch.zeros(2, 3, 3, dtype=torch.long), torch.tensor([[[0, 0, V]] * 3] * 2))
    s = cm.compute(["thing"])
    assert cm.mat.tolist() == [[12]]
    assert (s["pixel_acc"], s["mean_acc"], s["mean_iou"], s["fw_iou"]) == (1.0, 1.0, 1.0, 1.0)
    assert s["per_class_iou"] == [1.0]
    assert s["num_images"] == 2

    # only one of three classes present anywhere
    cm = ConfusionMatrix(3)
    cm.update(torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long))
    s = cm.compute()
    assert s["per_class_iou"] == [1.0, None, None]
    assert s["mean_iou"] == 1.0 and s["mean_acc"] == 1.0


def test_accumulates_over_the_dataset_never_per_batch():
    # batch 1: everything class 0, all right → alone mean IoU 1.
    # batch 2: gt [1,1,0,0], pred [1,0,0,0] → alone IoU_0 = 2/3, IoU_1 = 1/2, mean 7/12.
    # Per-batch averaging would give (1 + 7/12)/2 = 19/24. The dataset matrix is
    # [[6, 0], [1, 1]]: IoU_0 = 6/(6+7-6) = 6/7, IoU_1 = 1/(2+1-1) = 1/2, mean 19/28.
    p1, g1 = torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long)
    p2, g2 = torch.tensor([[[1, 0], [0, 0]]]), torch.tensor([[[1, 1], [0, 0]]])
    acc = ConfusionMatrix(2)
    acc.update(p1, g1)
    acc.update(p2, g2)
    once = ConfusionMatrix(2)
    once.update(torch.cat([p1, p2]), torch.cat([g1, g2]))
    assert acc.mat.tolist() == once.mat.tolist() == [[6, 0], [1, 1]]
    s = acc.compute()
    assert s == once.compute()
    assert s["num_images"] == 2
    assert s["mean_iou"] == pytest.approx(19 / 28)
    assert s["mean_iou"] != pytest.approx(19 / 24)
    assert s["per_class_iou"] == pytest.approx([6 / 7, 1 / 2])


def test_merge_and_reset():
    pred, gt = pairs_to_tensors(HAND_PAIRS)
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    a.update(pred[:5], gt[:5])
    b.update(pred[5:], gt[5:])
    b.update(pred[:0], gt[:0])  # an empty batch counts an image and no pixels
    a.merge(b)
    assert a.mat.tolist() == HAND_MATRIX
    assert a.num_images == 3
    with pytest.raises(ValueError):
        a.merge(ConfusionMatrix(4))
    a.reset()
    assert a.mat.sum() == 0 and a.num_images == 0


def test_all_reduce_without_and_with_a_process_group(tmp_path):
    import torch.distributed as dist

    pred, gt = pairs_to_tensors(HAND_PAIRS)
    cm = ConfusionMatrix(3)
    cm.update(pred, gt, num_images=4)
    cm.all_reduce()  # not initialised: no-op
    assert cm.mat.tolist() == HAND_MATRIX and cm.num_images == 4
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    try:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    except RuntimeError as exc:  # e.g. no usable network interface for gloo on this machine
        pytest.skip(f"cannot start a gloo process group: {exc}")
    try:
        cm.all_reduce()  # one rank: the sum is itself
    finally:
        dist.destroy_process_group()
    assert cm.mat.tolist() == HAND_MATRIX and cm.num_images == 4


def test_empty_matrix_gives_none_without_warnings():
    cm = ConfusionMatrix(3)
    cm.update(torch.zeros(4, dtype=torch.long), torch.full((4,), V))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            s = cm.compute()
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou"):
        assert s[key] is None
    assert s["per_class_iou"] == [None] * 3
    assert "-" in format_table(s)


def test_no_warnings_with_absent_classes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            s = scores_from_matrix(np.array([[3, 0, 0], [0, 0, 0], [1, 0, 0]]))
    assert s["per_class_iou"][1] is None
    assert s["per_class_iou"][2] == 0.0


def fcn_reference(hist):
    """The formulas of fcn.berkeleyvision.org score.py, written out for comparison."""
    hist = hist.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist).sum() / hist.sum()
        acc_cls = np.nanmean(np.diag(hist) / hist.sum(1))
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
        mean_iu = np.nanmean(iu)
        freq = hist.sum(1) / hist.sum()
        fwavacc = (freq[freq > 0] * iu[freq > 0]).sum()
    return acc, acc_cls, mean_iu, fwavacc, iu


@pytest.mark.parametrize("num_classes", [21, 200])  # 200 uses the int32 index path
def test_random_batches_match_numpy_bincount_and_fcn_formulas(num_classes):
    rng = np.random.default_rng(num_classes)
    c = num_classes
    cm = ConfusionMatrix(c)
    hist = np.zeros((c, c), dtype=np.int64)
    for _ in range(3):
        gt = rng.integers(0, c, size=(2, 17, 23)).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.2] = V
        gt[rng.random(gt.shape) < 0.05] = c + 3  # out of range: ignored too
        pred = rng.integers(0, min(c, 15), size=gt.shape)  # some classes never predicted
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
        valid = gt < c  # the reference's fast_hist
        hist += np.bincount(c * gt[valid].astype(int) + pred[valid], minlength=c * c).reshape(c, c)
    assert np.array_equal(cm.mat.numpy(), hist)
    s = cm.compute()
    acc, acc_cls, mean_iu, fwavacc, iu = fcn_reference(hist)
    assert s["pixel_acc"] == acc and s["mean_acc"] == acc_cls
    assert s["mean_iou"] == mean_iu and s["fw_iou"] == fwavacc
    assert [np.nan if v is None else v for v in s["per_class_iou"]] == pytest.approx(iu, nan_ok=True)
    assert s["num_images"] == 6
    if c == 21:
        assert s["class_names"] == list(VOC_CLASSES)


def test_format_table_shows_percentages():
    s = scores_from_matrix(np.array(HAND_MATRIX), ["a", "b", "c"], num_images=1)
    table = format_table(s)
    assert "66.67" in table and "40.00" in table and "50.00" in table  # per-class IoU
    assert "70.00" in table  # pixel accuracy
    assert "52.22" in table  # mean IoU 47/90
    assert "54.33" in table  # fw IoU 163/300
    assert "76.67" in table  # mean accuracy 23/30


def test_cross_entropy_meter_is_the_dataset_mean_with_void_ignored():
    torch.manual_seed(0)
    logits = [torch.randn(2, 5, 45, 61), torch.randn(1, 5, 45, 61)]
    targets = [torch.randint(0, 5, (2, 45, 61)), torch.randint(0, 5, (1, 45, 61))]
    targets[0][:, :10] = 255  # void band
    targets[1][0, 0, 0] = 7   # outside [0, C): ignored like void
    meter = CrossEntropyMeter()
    for x, t in zip(logits, targets):
        meter.update(torch.log_softmax(x, dim=1), t)
    flat_logits = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, 5) for x in logits])
    flat_targets = torch.cat([t.reshape(-1) for t in targets])
    keep = flat_targets < 5
    expected = torch.nn.functional.cross_entropy(flat_logits[keep], flat_targets[keep])  # mean over all valid pixels
    assert meter.compute() == pytest.approx(expected.item(), rel=1e-6)
    from_probs = CrossEntropyMeter()  # what the evaluator passes: probabilities
    for x, t in zip(logits, targets):
        from_probs.update(torch.softmax(x, dim=1), t, log=False)
    assert from_probs.compute() == pytest.approx(expected.item(), rel=1e-5)
    assert CrossEntropyMeter().compute() is None  # nothing valid: undefined, not 0
