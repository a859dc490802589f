"""Probe mode: the backbone frozen and run once per batch; every (tap, n) head and the no-skip head
trained together, so a whole Table 1/2 costs about one training.

Each head is a complete `SkipHead` (its own top 1×1 class conv, and for a tap its n×n + 1×1 convs).
The heads share no parameter, so the summed loss gives each head exactly the gradient it would get
alone on the same frozen features: probe mode equals separate runs with `model.freeze_backbone`
(same data order, same seed), minus the repeated backbone passes. It does not equal separate runs
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
from skipseg.engine.loading import guarded_batches
from skipseg.engine.runtime import Runtime
from skipseg.engine.sampling import SizeGroupedBatchSampler
from skipseg.engine.trainer import Trainer
from skipseg.inference.predictor import model_options
from skipseg.metrics import ConfusionMatrix
from skipseg.models.skipnet import GridPredictor, SkipHead, resample

PROBE_FILE = "probe.json"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadSpec:
    """One configuration: its name (the sweep's run name), tap module (None: the top alone), n."""

    name: str
    tap: str | None
    kernel: int | None


class ProbeNet(GridPredictor, nn.Module):
    """A frozen backbone and one `SkipHead` per `HeadSpec`; `forward(x) -> {name: logits}`."""

    def __init__(self, backbone: nn.Module, num_classes: int, top: str, heads: Sequence[HeadSpec],
                 head_channels: int = 256, grid: int = 67, mode: str = "box", input_size: int | None = None) -> None:
        super().__init__()
        self.backbone, self.num_classes, self.top = backbone, num_classes, top
        self.grid, self.mode = (grid, grid), mode
        self.input_size = (input_size, input_size) if input_size else None
        self.specs = {spec.name: spec for spec in heads}
        top_channels = backbone.tap(top).channels
        self.heads = nn.ModuleDict({
            spec.name: SkipHead(top_channels, num_classes, backbone.tap(spec.tap).channels if spec.tap else None,
                                spec.kernel or 1, head_channels)
            for spec in heads
        })
        backbone.requires_grad_(False)
        backbone.eval()

    def train(self, mode: bool = True) -> ProbeNet:
        super().train(mode)
        self.backbone.eval()  # frozen, batch-norm statistics included
        return self

    def features(self, x: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            return self.backbone(x)  # {name: [N, C_t, h_t, w_t]}, computed once for every head

    def class_maps(self, x: Tensor, name: str) -> dict[str, Tensor]:
        """Head `name`'s per-class maps z at their own resolution (see `SkipHead.class_maps`)."""
        taps, spec = self.features(x), self.specs[name]
        return self.heads[name].class_maps(taps[self.top], taps[spec.tap] if spec.tap else None)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        taps = self.features(x)
        out = {}
        for name, head in self.heads.items():
            tap = self.specs[name].tap
            score = head(taps[self.top], taps[tap] if tap else None, self.grid)  # [N, C, G, G]
            out[name] = resample(score, (x.shape[-2], x.shape[-1])) if self.mode == "pixel" else score
        return out


def build_probe(config: Config, heads: Sequence[HeadSpec], with_init: bool = True) -> ProbeNet:
    """The skip net of `config` (backbone, weights, grid, mode) with all `heads` on one backbone."""
    from skipseg.models.registry import build_model, model_options as builder_defaults
    from skipseg.models.skipnet import resolve_taps

    options = {**builder_defaults("skipnet"), **model_options(config, with_init=with_init)}
    names, top = resolve_taps(options["backbone"], options["tap_names"], options["top"])
    needed = list(dict.fromkeys([*names, *(h.tap for h in heads if h.tap)]))
    options.update(tap=None, tap_names=needed, top=top, freeze_backbone=True)
    if with_init and not any(options.get(k) for k in ("pretrained", "weights", "init_from")):
        logger.warning("probe mode on a randomly initialised %s: its frozen batch norm keeps the initial "
                       "statistics, so the heads see unnormalised random features", options["backbone"])
    base = build_model("skipnet", **options)
    return ProbeNet(base.backbone, base.num_classes, top, heads, options["head_channels"], options["grid"],
                    options["mode"], options["input_size"])


def probe_from_run(run_dir: str | Path, prefer: str = "last") -> ProbeNet:
    """Rebuild a trained probe run (config.yaml's model, probe.json's heads, the checkpoint)."""
    from skipseg.engine.checkpoint import load_checkpoint

    state = load_checkpoint(run_dir, prefer)
    heads = [HeadSpec(**h) for h in json.loads((Path(run_dir) / PROBE_FILE).read_text())["heads"]]
    model = build_probe(config_from_dict(state["config"]), heads, with_init=False)
    model.load_state_dict(state["model"])
    return model.eval()


class ProbeTrainer(Trainer):
    """`Trainer` for a `ProbeNet`: the loss is the sum of every head's loss; validation scores all."""

    def __init__(self, config: Config, run_dir: str | Path, heads: Sequence[HeadSpec], **kwargs) -> None:
        self.heads = list(heads)
        super().__init__(config, run_dir, **kwargs)
        if self.runtime.is_main:
            (self.run_dir / PROBE_FILE).write_text(json.dumps({"heads": [asdict(h) for h in self.heads]}, indent=2))
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
    try:
        batches = guarded_batches(dataset, sampler, workers, pin_memory=runtime.device.type == "cuda")
        for images, masks in tqdm(batches, desc="evaluate heads", total=len(sampler), leave=False,
                                  disable=not (progress and runtime.is_main)):
            target = masks.to(runtime.device)
            if model.output_grid is not None:
                target = model.target_from_mask(target)  # [N, G, G]
            for name, logits in _head_logits(model, images, runtime).items():
                matrices[name].update(logits.argmax(1), target)
    finally:
        model.train(was_training)
    for matrix in matrices.values():
        matrix.all_reduce()
    return {name: matrix.compute(class_names) for name, matrix in matrices.items()}
