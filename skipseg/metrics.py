"""Segmentation scores exactly as the FCN reference scoring (`score.py` of shelhamer/fcn.berkeleyvision.org:
the confusion matrix of `fast_hist`, then overall accuracy, mean accuracy, mean IU and frequency-weighted IU).

One confusion matrix is accumulated over the whole dataset (rows = ground truth, columns =
prediction) and the scores are computed once from it, never averaged per batch. The formulas are
those of `score.py` in shelhamer/fcn.berkeleyvision.org, with `hist` the matrix, `t_i` its row sums:

    pixel accuracy  = Σ n_ii / Σ t_i                      acc     = diag.sum() / hist.sum()
    mean accuracy   = nanmean_i n_ii / t_i                acc_cls = nanmean(diag / hist.sum(1))
    IoU_i           = n_ii / (t_i + Σ_j n_ji − n_ii)      iu      = diag / (hist.sum(1) + hist.sum(0) - diag)
    mean IoU        = nanmean_i IoU_i                     mean_iu = nanmean(iu)
    fw IoU          = Σ t_i·IoU_i / Σ t_i                 fwavacc = (freq[freq > 0] * iu[freq > 0]).sum()

so a class absent from both ground truth and prediction (0/0 = NaN) is left out of the means, a
class predicted but absent from the ground truth has IoU 0 and counts, and mean accuracy leaves out
the classes absent from the ground truth. NaN comes out as `None` (JSON null).
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from skipseg.data.palette import IGNORE_INDEX, VOC_CLASSES, read_label_png
from skipseg.errors import SkipsegError

__all__ = ["ConfusionMatrix", "default_class_names", "format_table", "score_folders",
           "scores_from_matrix"]

# Dtypes that the fast path handles directly; other integer dtypes (uint16/32/64) go through int64.
_DIRECT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def default_class_names(num_classes: int) -> list[str]:
    """The 21 VOC names when `num_classes == 21`, otherwise `class_0`, `class_1`, ..."""
    if num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return [f"class_{i}" for i in range(num_classes)]


def _work_dtype(num_classes: int) -> torch.dtype:
    """Narrowest signed dtype that holds every intermediate bin index, from −C to C·C + C − 1.

    Narrow is fast: the index arithmetic and `bincount` are memory bound (see bench/confusion_impls.py).
    """
    top = num_classes * num_classes + num_classes
    if top < 2**15:
        return torch.int16
    if top < 2**31:
        return torch.int32
    return torch.int64


def _as_label_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = np.ascontiguousarray(x)  # torch refuses negative strides (e.g. a flipped array)
    x = torch.as_tensor(x)
    if x.dtype == torch.bool or x.dtype.is_floating_point or x.dtype.is_complex:
        raise TypeError(f"{name} must be an integer tensor of class indices, got {x.dtype}")
    if x.dtype not in _DIRECT_DTYPES:
        x = x.to(torch.int64)
    return x


def _bin_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """`(C*C,)` int64 counts of `C*target + pred` over the pixels whose target is in [0, C).

    No boolean-mask copy: the target is clamped to [-1, C], so every pixel whose target is outside
    [0, C) (or is 255) lands in one of two extra bins (below and above the C·C real ones) that are
    dropped.
    `pred` must already be known to lie in [0, C).
    """
    c = num_classes
    work = _work_dtype(c)
    # The clamp's bounds must be representable in the target's own dtype (torch refuses e.g. 200 for
    # int8); a narrow dtype whose maximum is below C holds only valid or negative labels anyway.
    info = torch.iinfo(target.dtype)
    t = target.clamp(max(-1, info.min), min(c, info.max)).to(work)
    if c > IGNORE_INDEX:  # 255 would be a class index here; it stays void
        t.masked_fill_(t == IGNORE_INDEX, -1)
    idx = torch.add(pred.to(work), t, alpha=c)  # in [-C, C*C + C - 1]
    idx.clamp_(-1, c * c).add_(1)  # 0: target < 0; 1..C*C: valid; C*C + 1: target >= C
    return torch.bincount(idx.reshape(-1), minlength=c * c + 2)[1 : c * c + 1]


class ConfusionMatrix:
    """Rows = ground truth, columns = prediction; accumulated over a whole dataset (never averaged per batch).

    `update` counts the pixels whose target is in [0, C) (255 and anything else outside is ignored)
    on the inputs' own device and adds the C×C counts to `mat` on `device`. It also counts images:
    the leading dimension of 3-D or higher inputs (`[N, H, W]`), one for 2-D inputs, unless
    `num_images` is given.
    """

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)
        self.num_images = 0

    def update(self, pred, target, num_images: int | None = None) -> None:
        """Add one batch. `pred`, `target`: same shape, any integer dtype, tensors or arrays.

        Raises ValueError when a prediction (on any pixel, void ones included) is outside [0, C).
        """
        pred = _as_label_tensor(pred, "pred")
        target = _as_label_tensor(target, "target")
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
            )
        if pred.device != target.device:
            raise ValueError(f"pred is on {pred.device} but target on {target.device}")
        if num_images is None:
            num_images = pred.shape[0] if pred.dim() >= 3 else 1
        c = self.num_classes
        if pred.numel():
            lo, hi = torch.aminmax(pred)
            if bool((lo < 0) | (hi >= c)):  # one host sync on GPU
                raise ValueError(
                    f"predictions must be class indices in [0, {c}), got values from "
                    f"{int(lo)} to {int(hi)}"
                )
            self.mat += _bin_counts(pred, target, c).view(c, c).to(self.mat.device)
        self.num_images += int(num_images)

    def merge(self, other: "ConfusionMatrix") -> None:
        """Add another matrix's counts (e.g. from another worker) into this one."""
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"cannot merge a {other.num_classes}-class matrix into a {self.num_classes}-class one"
            )
        self.mat += other.mat.to(self.mat.device)
        self.num_images += other.num_images

    def all_reduce(self) -> None:
        """Sum the counts (and image counts) over all ranks when torch.distributed is initialised.

        `mat` must be on a device the process group's backend handles (CUDA for NCCL).
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        c = self.num_classes
        buf = torch.cat([self.mat.reshape(-1), self.mat.new_tensor([self.num_images])])
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        self.mat.copy_(buf[: c * c].view(c, c))
        self.num_images = int(buf[c * c])

    def reset(self) -> None:
        """Zero the counts and the image count."""
        self.mat.zero_()
        self.num_images = 0

    def compute(self, class_names: Sequence[str] | None = None) -> dict:
        """The scores dict of `scores_from_matrix`, with `num_images` filled in."""
        return scores_from_matrix(self.mat, class_names, num_images=self.num_images)


class CrossEntropyMeter:
    """Mean cross-entropy (nats) of predicted distributions over the valid pixels (or cells) of a dataset.

    Sensitive where mIoU is not: a model whose argmax is still "background everywhere" can be closer
    to or further from the labels (the skip study compares heads on barely trained backbones so).
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.total = torch.zeros((), dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)

    def update(self, dist: torch.Tensor, target: torch.Tensor, log: bool = True) -> None:
        """`dist` `[N, C, H, W]`: log-probabilities (`log=True`, e.g. log-softmax of logits) or
        probabilities (`log=False`, floored at 1e-12); `target` `[N, H, W]`."""
        classes = dist.shape[1]
        valid = (target >= 0) & (target < classes)  # 255 and anything outside [0, C) ignored
        # Only the target class's value is needed: gather first, then convert (one value per pixel).
        picked = dist.gather(1, target.clamp(0, classes - 1)[:, None])[:, 0].float()  # [N, H, W]
        if not log:
            picked = picked.clamp_min(1e-12).log()
        self.total += -(picked * valid).sum().to(self.total)
        self.count += valid.sum().to(self.count)

    def all_reduce(self) -> None:
        """Sum over all ranks when torch.distributed is initialised."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            buf = torch.stack([self.total, self.count])
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            self.total.copy_(buf[0])
            self.count.copy_(buf[1])

    def compute(self) -> float | None:
        """The mean over valid pixels; None when there was none."""
        return float(self.total / self.count) if self.count > 0 else None


def _none_if_nan(x: float) -> float | None:
    x = float(x)
    return None if np.isnan(x) else x


def scores_from_matrix(mat: np.ndarray | torch.Tensor, class_names: Sequence[str] | None = None,
                       num_images: int | None = None) -> dict:
    """Scores of a C×C confusion matrix (rows = ground truth), as plain Python floats in [0, 1].

    Keys: pixel_acc, mean_acc, mean_iou, fw_iou, per_class_iou and per_class_acc (C values each,
    None where undefined), class_names, num_images, confusion (C×C ints). With no valid pixel at
    all every score is None (the reference would give fw IoU 0 there; None says "undefined").
    """
    if isinstance(mat, torch.Tensor):
        mat = mat.detach().cpu().numpy()
    counts = np.asarray(mat)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"confusion matrix must be square C×C, got shape {counts.shape}")
    num_classes = counts.shape[0]
    if class_names is None:
        class_names = default_class_names(num_classes)
    class_names = [str(n) for n in class_names]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a {num_classes}-class matrix")

    hist = counts.astype(np.float64)  # the reference accumulates into a float64 matrix
    # 0/0 (absent classes, empty matrix) and nanmean of all-NaN are expected here: no warnings.
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        diag = np.diag(hist)
        acc = diag.sum() / hist.sum()
        acc_per_class = diag / hist.sum(1)
        acc_cls = np.nanmean(acc_per_class)
        iu = diag / (hist.sum(1) + hist.sum(0) - diag)
        mean_iu = np.nanmean(iu)
        freq = hist.sum(1) / hist.sum()
        fwavacc = (freq[freq > 0] * iu[freq > 0]).sum()
    return {
        "pixel_acc": _none_if_nan(acc),
        "mean_acc": _none_if_nan(acc_cls),
        "mean_iou": _none_if_nan(mean_iu),
        "fw_iou": None if hist.sum() == 0 else float(fwavacc),
        "per_class_iou": [_none_if_nan(v) for v in iu],
        "per_class_acc": [_none_if_nan(v) for v in acc_per_class],
        "class_names": class_names,
        "num_images": None if num_images is None else int(num_images),
        "confusion": counts.astype(np.int64).tolist(),
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100.0 * x:.2f}"


def format_table(scores: dict) -> str:
    """Per-class IoU (and accuracy) table and the four summary figures, as percentages."""
    names = scores["class_names"]
    ious = scores["per_class_iou"]
    accs = scores.get("per_class_acc") or [None] * len(names)
    width = max([len("frequency weighted IoU")] + [len(n) for n in names])
    header = f"{'class':<{width}}  {'IoU %':>7}  {'acc %':>7}"
    rule = "-" * len(header)
    lines = [header, rule] + [f"{name:<{width}}  {_pct(iou):>7}  {_pct(acc):>7}"
                              for name, iou, acc in zip(names, ious, accs)] + [rule]
    summary = (("pixel accuracy", "pixel_acc"), ("mean accuracy", "mean_acc"), ("mean IoU", "mean_iou"),
               ("frequency weighted IoU", "fw_iou"))
    lines += [f"{label:<{width}}  {_pct(scores[key]):>7}" for label, key in summary]
    if scores.get("num_images") is not None:
        lines.append(f"{'images':<{width}}  {scores['num_images']:>7}")
    return "\n".join(lines)


def _png_stems(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise SkipsegError(f"{folder}: not a directory")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() == ".png" and p.is_file()}


def _score_pair(pred_path: Path, gt_path: Path, num_classes: int) -> ConfusionMatrix:
    """One image's confusion matrix; errors name the file."""
    pred, gt = read_label_png(pred_path), read_label_png(gt_path)
    if pred.shape != gt.shape:
        raise SkipsegError(
            f"{pred_path}: prediction is {pred.shape[1]}×{pred.shape[0]} but the ground truth "
            f"{gt_path} is {gt.shape[1]}×{gt.shape[0]}"
        )
    cm = ConfusionMatrix(num_classes)
    try:
        cm.update(pred, gt)
    except ValueError as exc:
        raise SkipsegError(f"{pred_path}: {exc}") from None
    return cm


def score_folders(pred_dir: str | Path, gt_dir: str | Path, num_classes: int | None = None,
                  class_names: Sequence[str] | None = None, workers: int | None = None) -> dict:
    """Score prediction PNGs against ground-truth PNGs matched by file stem (index PNGs).

    Every ground-truth file needs a prediction; extra predictions are ignored. Classes: the names
    given (which set C), else `num_classes` (default 21, the VOC names). Pixels whose ground truth
    is outside [0, C) (255 = void) are ignored; a prediction outside [0, C) is an error.
    """
    if class_names is not None:
        class_names = list(class_names)
        if num_classes is not None and num_classes != len(class_names):
            raise SkipsegError(f"num_classes: is {num_classes} but {len(class_names)} class names given")
        num_classes = len(class_names)
    if num_classes is None:
        num_classes = len(VOC_CLASSES)
    if num_classes < 1:
        raise SkipsegError(f"num_classes: must be positive, got {num_classes}")
    if class_names is None:
        class_names = default_class_names(num_classes)

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    gts = _png_stems(gt_dir)
    preds = _png_stems(pred_dir)
    if not gts:
        raise SkipsegError(f"{gt_dir}: no ground-truth .png files")
    missing = [stem for stem in gts if stem not in preds]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise SkipsegError(
            f"{pred_dir}: no prediction for {len(missing)} of {len(gts)} ground-truth images: {shown}"
        )

    # Each thread decodes (PIL releases the GIL) and counts one image; torch runs single-threaded
    # meanwhile, as OpenMP teams competing with these threads made scoring up to 30× slower on a
    # busy 2-core machine. The per-image matrices are summed in file order.
    total = ConfusionMatrix(num_classes)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
            for cm in pool.map(_score_pair, (preds[s] for s in gts), gts.values(),
                               [num_classes] * len(gts)):
                total.merge(cm)
    finally:
        torch.set_num_threads(threads)
    return total.compute(class_names)
