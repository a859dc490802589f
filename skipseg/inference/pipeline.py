"""What turns images into probabilities at evaluation: whole-image or proposal-wise prediction per
model, the mean over several models (an ensemble, e.g. EDeconvNet = DeconvNet + FCN-8s), then an
optional dense CRF.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from skipseg.core.runtime import Runtime
from skipseg.errors import SkipsegError
from skipseg.inference.crf import CRFParams
from skipseg.inference.predictor import predict_probs, read_rgb

# probs_fn(images [N,3,H,W] normalised, dataset indices) -> probabilities [N, C, H, W]
ProbsFn = Callable[[torch.Tensor, list[int]], torch.Tensor]


@dataclass
class InferenceOptions:
    """How each image is predicted. `proposal_runs` = indices (0-based) of the models that predict
    proposal-wise when `proposals` > 0 (None: all of them)."""

    flip: bool = False
    scales: Sequence[float] = (1.0,)
    proposals: int = 0
    proposal_extend: float = 1.2  # each box scaled about its centre, as stage-1 training's object boxes
    min_box: int = 1000  # px²: EdgeBoxes' default minimum box area (`minBoxArea`), the paper's proposals
    whole_image: str = "extra"  # extra: K boxes + the whole image | counted: one of the K | off
    aggregate: str = "max"
    proposal_batch: int | None = None  # crops per forward; None: default_proposal_batch(device)
    proposal_cache: Path | None = None
    proposal_runs: Sequence[int] | None = None
    crf: CRFParams | None = None

    def uses_proposals(self, model_index: int) -> bool:
        return self.proposals > 0 and (self.proposal_runs is None or model_index in self.proposal_runs)


def make_probs_fn(models: Sequence[nn.Module], image_path: Callable[[int], Path], runtime: Runtime,
                  options: InferenceOptions) -> ProbsFn:
    """A `ProbsFn` for `evaluate_dataset`: `image_path(index)` gives the file of a dataset index
    (proposals and the CRF work on the original RGB image)."""
    if options.proposal_runs is not None:
        bad = [i for i in options.proposal_runs if not 0 <= i < len(models)]
        if bad:
            raise SkipsegError(f"--proposal-runs: run {bad[0] + 1} does not exist (there are {len(models)} runs)")
    if options.proposals and (options.flip or tuple(options.scales) != (1.0,)):
        raise SkipsegError("--proposals: proposal-wise inference does not combine with --flip or --scales")

    def probs_fn(images: torch.Tensor, indices: list[int]) -> torch.Tensor:
        total = None
        for model_index, model in enumerate(models):
            if options.uses_proposals(model_index):
                probs = torch.stack([_proposal_probs(model, image, image_path(index), runtime, options)
                                     for image, index in zip(images, indices)])
            else:
                probs = predict_probs(model, images, runtime, flip=options.flip, scales=options.scales)
            total = probs if total is None else total + probs
        assert total is not None
        probs = total / len(models)
        if options.crf is not None:
            probs = torch.stack([_crf(p, image_path(index), options.crf) for p, index in zip(probs, indices)])
        return probs

    return probs_fn


def _proposal_probs(model: nn.Module, image: torch.Tensor, path: Path, runtime: Runtime,
                    options: InferenceOptions) -> torch.Tensor:
    from skipseg.inference.aggregate import proposal_probs
    from skipseg.inference.proposals import extend_boxes, proposals

    boxes = proposals(path, k=options.proposals, cache_dir=options.proposal_cache, min_area=options.min_box,
                      whole_image=options.whole_image)
    boxes = extend_boxes(boxes, options.proposal_extend, (int(image.shape[-2]), int(image.shape[-1])))
    batch = options.proposal_batch or default_proposal_batch(runtime.device)
    probs = proposal_probs(model, image, boxes, runtime, aggregate=options.aggregate, batch_size=batch)
    return probs.to(runtime.device)


def default_proposal_batch(device: torch.device) -> int:
    """Crops per forward of proposal-wise inference: 16 on a GPU, 2 on a CPU.

    On a CPU one 224² crop already keeps the cores busy, and larger batches push the activations
    out of cache, so a few crops per forward is fastest (`python -m bench.run --only proposals`
    measures 1, 2 and 16)."""
    return 16 if device.type == "cuda" else 2


def _crf(probs: torch.Tensor, path: Path, params: CRFParams) -> torch.Tensor:
    from skipseg.inference.crf import dense_crf

    refined = dense_crf(probs.float().cpu().numpy(), read_rgb(path), params)
    return torch.from_numpy(refined).to(probs.device)
