"""Probe mode: the backbone frozen and run once per batch; every (tap, n) head and the no-skip head
trained together, so a whole Table 1/2 costs about one training.

The network is `models.probe.ProbeNet`: one complete `SkipHead` per configuration on one frozen
backbone. The heads share no parameter, so the summed loss gives each head exactly the gradient it
would get alone on the same frozen features: probe mode equals separate runs with
`model.freeze_backbone` (same data order, same seed), minus the repeated backbone passes. Training
and evaluation compute the heads in bulk (`engine.batched_heads`). Probe mode does not equal
separate runs that also train the backbone; the sweep can do those (`sweep.mode: separate`).

Probe mode is meant for trained backbones: a randomly initialised backbone's frozen batch norm
keeps its initial statistics (mean 0, variance 1), i.e. does not normalise, and the heads' losses
start an order of magnitude above ln(C).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from skipseg.config import Config, config_from_dict
from skipseg.data.palette import IGNORE_INDEX
from skipseg.core.loading import guarded_batches
from skipseg.core.rundir import RunDir
from skipseg.core.runtime import Runtime
from skipseg.core.sampling import SizeGroupedBatchSampler
from skipseg.engine.batched_heads import batch_heads
from skipseg.engine.evaluator import image_sizes
from skipseg.engine.trainer import Trainer
from skipseg.inference.predictor import model_options
from skipseg.metrics import ConfusionMatrix, CrossEntropyMeter
from skipseg.models.probe import HeadSpec, ProbeNet
from skipseg.models.skipnet import resample

logger = logging.getLogger(__name__)


def build_probe(config: Config, heads: Sequence[HeadSpec], with_init: bool = True, batched: bool = True) -> ProbeNet:
    """The skip net of `config` (backbone, weights, grid, mode) with all `heads` on one backbone,
    computed in bulk (`batch_heads`) unless `batched` is False."""
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
    probe = ProbeNet(base.backbone, base.num_classes, top, heads, options["head_channels"], options["grid"],
                     options["mode"], options["input_size"], options["head_activation"], options["score_init"],
                     options["cell_label"], options["score_upsampling"])
    return batch_heads(probe) if batched else probe


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
