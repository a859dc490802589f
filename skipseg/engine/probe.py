"""Probe mode: the backbone frozen and run once per batch; every (tap, n) head and the no-skip head
trained together, so a whole Table 1/2 costs about one training.

Each head is a complete `SkipHead` (its own top 1×1 class conv, and for a tap its n×n + 1×1 convs).
The heads share no parameter, so the summed loss gives each head exactly the gradient it would get
alone on the same frozen features: probe mode equals separate runs with `model.freeze_backbone`
(same data order, same seed), minus the repeated backbone passes. `ProbeNet.forward` computes the
heads in bulk and skips only work whose result is multiplied by zero, so the scores and gradients
are those of each head alone up to the order of float32 sums. It does not equal separate runs
that also train the backbone; the sweep can do those (`sweep.mode: separate`).

The frozen backbone runs in eval mode, batch norm included, which is right for ImageNet (or any
trained) weights. A randomly initialised backbone normalises with its initial statistics (mean 0,
variance 1), i.e. not at all: its features are unscaled and the heads' losses start an order of
magnitude above ln(C). Probe mode is meant for trained backbones.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from skipseg.config import Config, config_from_dict
from skipseg.data.palette import IGNORE_INDEX
from skipseg.engine.evaluator import image_sizes
from skipseg.core.loading import guarded_batches
from skipseg.core.rundir import RunDir
from skipseg.core.runtime import Runtime
from skipseg.core.sampling import SizeGroupedBatchSampler
from skipseg.engine.trainer import Trainer
from skipseg.inference.predictor import model_options
from skipseg.metrics import ConfusionMatrix, CrossEntropyMeter
from skipseg.models.skipnet import GridPredictor, SkipHead, resample

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadSpec:
    """One configuration: its name (the sweep's run name), tap module (None: the top alone), n."""

    name: str
    tap: str | None
    kernel: int | None


# Tap heads compute only the rows the grid reads when those are at most this share: the strips copy n
# rows per row read, which costs more than it saves when nearly every row is read.
ROW_SHARE = 0.75


def read_rows(length: int, size: int, mode: str = "bilinear") -> Tensor:
    """`[R]` int64: the rows of a `length`-row map that resampling to `size` rows (`resample`, in
    `mode`) reads with a non-zero weight, taken from what it gives one-hot rows."""
    eye = torch.eye(length).view(1, length, length, 1)  # channel j: a one-hot at row j
    weights = resample(eye, (size, 1), mode)  # [1, L, size, 1]
    return weights[0, :, :, 0].ne(0).any(1).nonzero().flatten()


def trimmed_kernel(conv: nn.Conv2d, height: int, width: int) -> tuple[Tensor, tuple[int, int]]:
    """`conv`'s ("same"-padded, odd) weight less the outer taps that never meet a `height`×`width` map,
    and its padding: the same outputs and weight gradient (exactly 0 on the trimmed taps)."""
    kh, kw = conv.kernel_size
    eh, ew = min(kh, 2 * height - 1), min(kw, 2 * width - 1)
    dh, dw = (kh - eh) // 2, (kw - ew) // 2
    return conv.weight[:, :, dh : dh + eh, dw : dw + ew], (eh // 2, ew // 2)


class SmallMapConv(torch.autograd.Function):
    """`F.conv2d` of a no-grad map smaller than the kernel (3×3 under 5×5), its weight gradient as one
    batched matrix product over the kernel offsets: `dW[:, :, dy, dx] = g [D, N·h·w] @ f(dy, dx) [N·h·w, C]`."""

    @staticmethod
    def forward(ctx, f: Tensor, weight: Tensor, bias: Tensor, padding: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(f)
        ctx.padding, ctx.kernel = padding, tuple(weight.shape[2:])
        return F.conv2d(f, weight, bias, padding=padding)  # [N, D, h, w]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, Tensor | None, None]:
        (f,) = ctx.saved_tensors  # [N, C, h, w]
        (kh, kw), (ph, pw), (_, c, h, w) = ctx.kernel, ctx.padding, f.shape
        padded = F.pad(f, (pw, pw, ph, ph)).permute(0, 2, 3, 1)  # [N, h + 2ph, w + 2pw, C]
        shifted = torch.stack([padded[:, dy : dy + h, dx : dx + w].reshape(-1, c)
                               for dy in range(kh) for dx in range(kw)])  # [kh·kw, N·h·w, C]
        weight_grad = torch.matmul(grad.transpose(0, 1).reshape(grad.shape[1], -1), shifted)  # [kh·kw, D, C]
        bias_grad = grad.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
        return None, weight_grad.permute(1, 2, 0).reshape(-1, c, kh, kw), bias_grad, None


def head_conv(f: Tensor, weight: Tensor, bias: Tensor, padding: tuple[int, int]) -> Tensor:
    """`F.conv2d(f, weight, bias, padding)`; on CPU without autocast, a map smaller than the kernel
    takes `SmallMapConv`, whose weight gradient is one batched matrix product instead of oneDNN's
    backward-weights kernel, slow where most kernel taps fall outside the map."""
    small = f.shape[-2] * f.shape[-1] < weight.shape[-2] * weight.shape[-1]
    if small and f.device.type == "cpu" and not torch.is_autocast_enabled("cpu") and not f.requires_grad:
        return SmallMapConv.apply(f, weight, bias, padding)
    return F.conv2d(f, weight, bias, padding=padding)


def tap_scores(heads: Sequence[SkipHead], f: Tensor, grid: tuple[int, int], rows: Tensor | None,
               upsampling: str = "bilinear") -> Tensor:
    """`resample(z_i)` of every head on one tap, `[N, len(heads)·C, G, G]`, as `SkipHead` computes it.

    `rows` (`read_rows`; None: all): only those rows of h and z are computed, strips of n rows through
    the n×n conv; the rows left at 0 are weighed by 0, so scores and gradients are the full maps'.
    """
    n, _, height, width = f.shape  # f: [N, C_t, h_t, w_t], no grad
    kernels = [trimmed_kernel(head.conv_tap, height, width) for head in heads]
    most = max(ph for _, (ph, _) in kernels)
    padded = F.pad(f, (0, 0, most, most)) if rows is not None else f  # [N, C_t, h_t + 2p, w_t], once
    maps = []
    for head, (weight, (ph, pw)) in zip(heads, kernels):
        if rows is None:
            maps.append(head.score_tap(head.activation(head_conv(f, weight, head.conv_tap.bias, (ph, pw)))))
            continue
        window = rows[:, None] + torch.arange(most - ph, most + ph + 1, device=f.device)  # [R, n] padded rows
        strips = padded[:, :, window].transpose(1, 2)  # [N, R, C_t, n, w_t]
        h = F.conv2d(strips.flatten(0, 1), weight, head.conv_tap.bias, padding=(0, pw))  # [N·R, D, 1, w_t]
        z = head.score_tap(head.activation(h))  # [N·R, C, 1, w_t]
        maps.append(z.reshape(n, len(rows), -1, width).transpose(1, 2))  # [N, C, R, w_t]
    z = torch.cat(maps, 1)  # [N, K·C, R or h_t, w_t]
    if rows is not None:  # the unread rows stay 0: weighted by 0, they get no gradient either
        z = z.new_zeros(n, z.shape[1], height, width).index_copy(2, rows, z)
    return resample(z, grid, upsampling)  # [N, K·C, G, G]


class ProbeNet(GridPredictor, nn.Module):
    """A frozen backbone and one `SkipHead` per `HeadSpec`; `forward(x) -> {name: logits}`.

    `forward` equals every head's `SkipHead.forward` on the frozen features, computed in bulk: the
    backbone once, without autograd, in channels_last (faster for inference-only passes, fp32 too); the
    top 1×1 class convs of all heads as one conv; a tap's heads together (`tap_scores`: the rows the
    grid reads, kernels trimmed to the map), one resampling per tap and one for all tops.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, top: str, heads: Sequence[HeadSpec],
                 head_channels: int = 256, grid: int = 67, mode: str = "box", input_size: int | None = None,
                 head_activation: str = "relu", score_init: str = "zeros", cell_label: str = "majority",
                 score_upsampling: str = "bilinear") -> None:
        super().__init__()
        self.backbone, self.num_classes, self.top = backbone, num_classes, top
        self.grid, self.mode, self.cell_label, self.upsampling = (grid, grid), mode, cell_label, score_upsampling
        self.input_size = (input_size, input_size) if input_size else None
        self.specs = {spec.name: spec for spec in heads}
        top_channels = backbone.tap(top).channels
        self.heads = nn.ModuleDict({
            spec.name: SkipHead(top_channels, num_classes, backbone.tap(spec.tap).channels if spec.tap else None,
                                spec.kernel or 1, head_channels, head_activation, score_init, score_upsampling)
            for spec in heads
        })
        self.groups: dict[str, list[int]] = {}  # tap → the indices of its heads
        for index, spec in ((i, spec) for i, spec in enumerate(heads) if spec.tap):
            self.groups.setdefault(spec.tap, []).append(index)
        self._rows: dict[tuple[int, str], Tensor | None] = {}  # (tap height, device) → `_read_rows`
        backbone.requires_grad_(False)
        backbone.eval()
        backbone.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True) -> ProbeNet:
        super().train(mode)
        self.backbone.eval()  # frozen, batch-norm statistics included
        return self

    def features(self, x: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():  # {name: [N, C_t, h_t, w_t]}, computed once for every head
            return self.backbone(x.contiguous(memory_format=torch.channels_last))

    def class_maps(self, x: Tensor, name: str) -> dict[str, Tensor]:
        """Head `name`'s per-class maps z at their own resolution (see `SkipHead.class_maps`)."""
        taps, spec = self.features(x), self.specs[name]
        return self.heads[name].class_maps(taps[self.top], taps[spec.tap] if spec.tap else None)

    def _read_rows(self, height: int, device: torch.device) -> Tensor | None:
        """The rows of a `height`-row tap map the grid reads (`read_rows`), None when nearly all."""
        key = (height, str(device))
        if key not in self._rows:
            rows = read_rows(height, self.grid[0], self.upsampling)
            self._rows[key] = rows.to(device) if len(rows) <= ROW_SHARE * height else None
        return self._rows[key]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        taps = self.features(x)
        heads, c = list(self.heads.values()), self.num_classes
        weight = torch.cat([h.score_top.weight for h in heads])  # [K·C, C_top, 1, 1]
        z_top = F.conv2d(taps[self.top], weight, torch.cat([h.score_top.bias for h in heads]))  # [N, K·C, h, w]
        scores = list(resample(z_top, self.grid, self.upsampling).split(c, 1))  # K × [N, C, G, G]
        for tap, indices in self.groups.items():
            f = taps[tap].contiguous(memory_format=_memory_format(heads[indices[0]].conv_tap.weight))
            z = tap_scores([heads[i] for i in indices], f, self.grid, self._read_rows(f.shape[-2], f.device),
                           self.upsampling)
            for i, z_i in zip(indices, z.split(c, 1)):
                scores[i] = scores[i] + z_i  # [N, C, G, G], top + tap as in SkipHead.forward
        if self.mode == "pixel":
            scores = resample(torch.cat(scores, 1), (x.shape[-2], x.shape[-1])).split(c, 1)  # K × [N, C, H, W]
        return dict(zip(self.heads, scores))


def _memory_format(weight: Tensor) -> torch.memory_format:
    """The head convs' memory format (the runtime's; contiguous ran them faster on CPU in fp32)."""
    cl = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def build_probe(config: Config, heads: Sequence[HeadSpec], with_init: bool = True) -> ProbeNet:
    """The skip net of `config` (backbone, weights, grid, mode) with all `heads` on one backbone."""
    from skipseg.models.registry import build_model, model_options as builder_defaults
    from skipseg.models.skipnet import resolve_taps

    options = {**builder_defaults("skipnet"), **model_options(config, with_init=with_init)}
    names, top = resolve_taps(options["backbone"], options["tap_names"], options["top"], options["width"])
    needed = list(dict.fromkeys([*names, *(h.tap for h in heads if h.tap)]))
    options.update(tap=None, tap_names=needed, top=top, freeze_backbone=True)
    if with_init and not any(options.get(k) for k in ("pretrained", "weights", "init_from")):
        logger.warning("probe mode on a randomly initialised %s: its frozen batch norm keeps the initial "
                       "statistics, so the heads see unnormalised random features", options["backbone"])
    base = build_model("skipnet", **options)
    return ProbeNet(base.backbone, base.num_classes, top, heads, options["head_channels"], options["grid"],
                    options["mode"], options["input_size"], options["head_activation"], options["score_init"],
                    options["cell_label"], options["score_upsampling"])


def probe_from_run(run_dir: str | Path, prefer: str = "last") -> ProbeNet:
    """Rebuild a trained probe run (config.yaml's model, probe.json's heads, the checkpoint)."""
    from skipseg.core.checkpoint import load_checkpoint

    state = load_checkpoint(run_dir, prefer)
    heads = [HeadSpec(**h) for h in json.loads(RunDir(run_dir).probe_file.read_text())["heads"]]
    model = build_probe(config_from_dict(state["config"]), heads, with_init=False)
    model.load_state_dict(state["model"])
    return model.eval()


class ProbeTrainer(Trainer):
    """`Trainer` for a `ProbeNet`: the loss is the sum of every head's loss; validation scores all."""

    def __init__(self, config: Config, run_dir: str | Path, heads: Sequence[HeadSpec], **kwargs) -> None:
        self.heads = list(heads)
        super().__init__(config, run_dir, **kwargs)
        if self.runtime.is_main:
            self.folder.probe_file.write_text(json.dumps({"heads": [asdict(h) for h in self.heads]}, indent=2))
        self.last_scores: dict[str, dict] | None = None

    def build_model(self) -> nn.Module:
        return build_probe(self.config, self.heads)

    def loss_sum(self, logits: dict[str, Tensor], target: Tensor) -> Tensor:
        return sum(F.cross_entropy(z.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
                   for z in logits.values())

    def validate(self) -> dict:
        data = self.config.data
        self.last_scores = evaluate_heads(self.model, self.val_set, self.runtime, batch_size=self.config.train.batch_size,
                                          workers=data.workers, max_images=self.config.train.max_val_images,
                                          progress=self.progress)
        best = max(self.last_scores.values(), key=lambda s: s["mean_iou"] or 0.0)
        if self.logbook is not None:  # the best head's figures
            self.logbook.log(self.step, "val", **{k: best[k] for k in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou")})
        return {"mean_iou": best["mean_iou"], "heads": self.last_scores}


def _head_logits(model: ProbeNet, images: Tensor, runtime: Runtime) -> dict[str, Tensor]:
    """Every head's logits for a normalised batch, as `predict_probs` shapes them (cells or pixels)."""
    images = runtime.to_input(images)
    size = images.shape[-2:]
    if model.input_size and tuple(size) != model.input_size:
        images = F.interpolate(images, size=model.input_size, mode="bilinear", align_corners=False)
    with torch.inference_mode(), runtime.autocast():
        out = model(images)
    if model.output_grid is None:
        out = {k: resample(v.float(), (size[0], size[1])) for k, v in out.items()}
    return out


def evaluate_heads(model: ProbeNet, dataset, runtime: Runtime, *, batch_size: int = 4, workers: int = 2,
                   max_images: int | None = None, progress: bool = True) -> dict[str, dict]:
    """`{head name: scores}` over `dataset` (eval transforms), one backbone pass per batch for all."""
    was_training = model.training
    model.eval()
    sizes = image_sizes(dataset)
    if max_images is not None and max_images < len(dataset):
        dataset, sizes = torch.utils.data.Subset(dataset, range(max_images)), sizes[:max_images]
    class_names = getattr(getattr(dataset, "dataset", dataset), "class_names", None)
    sampler = SizeGroupedBatchSampler(sizes, batch_size, runtime.rank, runtime.world_size)
    matrices = {name: ConfusionMatrix(model.num_classes, device=runtime.device) for name in model.heads}
    entropies = {name: CrossEntropyMeter(device=runtime.device) for name in model.heads}
    try:
        batches = guarded_batches(dataset, sampler, workers, pin_memory=runtime.device.type == "cuda")
        for images, masks in tqdm(batches, desc="evaluate heads", total=len(sampler), leave=False,
                                  disable=not (progress and runtime.is_main)):
            target = masks.to(runtime.device)
            if model.output_grid is not None:
                target = model.target_from_mask(target)  # [N, G, G]
            for name, logits in _head_logits(model, images, runtime).items():
                matrices[name].update(logits.argmax(1), target)
                entropies[name].update(F.log_softmax(logits.float(), dim=1), target)
    finally:
        model.train(was_training)
    for meter in (*matrices.values(), *entropies.values()):
        meter.all_reduce()
    return {name: {**matrix.compute(class_names), "cross_entropy": entropies[name].compute()}
            for name, matrix in matrices.items()}
