"""The config's sections as dataclasses: model, data, train, crf. Their defaults are skipseg's;
every key's type is its annotation, every number's range is in `rules.RANGES`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from skipseg.config.rules import check_ranges

# The field of a section that takes the keys no other field names, e.g. `ModelConfig.options`.
REST = "rest"


@dataclass
class ModelConfig:
    """The options every model builder takes (`models.registry.COMMON_OPTIONS`) and, in `options`,
    the model's own (`kernel`, `tap`, ...) as written. In YAML both sit flat in `model:`. This layer
    does not know the builders, so it checks the common keys only; `models.registry.check_model_config`
    checks the rest against the builder's signature (`load_config(..., check=...)`)."""

    name: str = "fcn8s"
    num_classes: int = 21
    width: float = 1.0
    pretrained: str | None = None  # "imagenet" → torchvision weights API
    weights: str | None = None  # a torchvision-format state_dict file
    init_from: str | None = None  # staged training: a run folder or checkpoint
    # Every other key of `model:`; a null value is the builder's default, so it is left out.
    options: dict[str, Any] = field(default_factory=dict, metadata={REST: True})


@dataclass
class DataConfig:
    root: str = "data/shapes"
    sbd_root: str | None = None  # SBD `benchmark_RELEASE/dataset`, for train_aug
    val_root: str | None = None  # when validation data lives elsewhere (FCN: SBD train, VOC seg11valid)
    train_split: str = "train"
    val_split: str = "val"
    crop_size: int | None = 96  # None = whole images (the FCN reference: batch 1, no crop)
    resize: int | None = None  # resize before cropping (DeconvNet: 250 then crop 224)
    scale_min: float = 0.5
    scale_max: float = 2.0
    flip: bool = True
    workers: int = 2
    cache_mb: int = 512  # decoded training images kept in memory per loader process (0: decode every time)
    # What one training sample is (DeconvNet §4.2): image = a whole image (random scale and crop as
    # above); instances = one crop per ground-truth object, its tight box × `extend`, only that
    # object labelled (stage 1); proposals = crops of proposals (box × `extend`) whose box IoU with
    # an object reaches `min_iou`, all labels kept (stage 2). Crops are resized to `resize` (null:
    # crop_size·250/224, the paper's 250 for 224), randomly cropped to crop_size and flipped.
    sampling: str = "image"
    extend: float = 1.2
    min_iou: float = 0.5
    proposals: int = 50  # top-K selective-search proposals per image that stage 2 chooses from
    proposal_side: int | None = 200  # selective search on a copy with this longer side (null: the full image)
    proposal_cache: str | None = None  # proposal cache folder (null: RUN/proposals)
    balance: bool = False  # repeat crops of rare classes: ceil(max class count / class count) times


@dataclass
class TrainConfig:
    batch_size: int = 8
    iterations: int = 1000
    epochs: float | None = None  # when set, overrides iterations: epochs × len(train) / batch
    lr: float = 0.01
    optimizer: str = "sgd"  # sgd | adam
    momentum: float = 0.9
    weight_decay: float = 5e-4
    bias_lr_mult: float = 1.0  # biases learn at lr x this (the FCN reference solver: 2, Caffe's lr_mult)
    bias_decay: float = 1.0  # biases decay at weight_decay x this (the FCN reference: 0, Caffe's decay_mult)
    lr_schedule: str = "poly"  # poly | step | constant
    warmup: int = 0  # iterations of linear lr warm-up from 0 (then the schedule), as deep nets from scratch need
    poly_power: float = 0.9
    step_size: int = 1000  # iterations between decays for lr_schedule=step
    step_gamma: float = 0.1
    loss_reduction: str = "mean"  # mean | sum (the FCN reference sums over pixels)
    accumulate: int = 1  # gradient accumulation steps per optimiser step
    seed: int = 0
    val_every: int = 500
    log_every: int = 10
    checkpoint_every: int = 500
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    channels_last: bool | None = None  # None = auto: with mixed precision on; fp32 on CPU off (slower there)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    max_val_images: int | None = None
    sync_bn: bool = True  # under DDP on GPUs: BatchNorm → SyncBatchNorm (statistics of the global batch)


@dataclass(frozen=True)
class CRFParams:
    """The dense CRF's kernel widths (pixels / colour levels), Potts weights, iterations and
    probability floor (`skipseg.inference.crf`; defaults: the DeconvNet reference code's)."""

    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 20.0
    bilateral_srgb: float = 3.0
    bilateral_compat: float = 5.0
    iterations: int = 10
    min_prob: float = 1e-8

    def __post_init__(self) -> None:
        # Built directly too (`--crf-params`, report samples), so it checks itself against RANGES.
        check_ranges(self, "crf")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    crf: CRFParams = field(default_factory=CRFParams)  # `evaluate --crf` (reference defaults)
