"""Typed run configuration: YAML file + dotted `key=value` overrides; unknown keys, wrong types and
numbers out of their range (RANGES) are errors, each one line naming the key. A model's own options
(`model.kernel`, ...) are its builder's: a layer above checks them (`load_config(..., check=...)`).

    cfg = load_config("configs/fcn8s_shapes.yaml", ["train.lr=0.01", "model.width=0.25"])
    save_run_config(run_dir, cfg)   # config.yaml (reloadable) + meta.json (git commit, versions, argv)
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import platform
import re
import subprocess
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from skipseg.core.rundir import RunDir
from skipseg.errors import SkipsegError


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


CHOICES: dict[str, tuple[str, ...]] = {
    "train.optimizer": ("sgd", "adam"),
    "train.lr_schedule": ("poly", "step", "constant"),
    "train.loss_reduction": ("mean", "sum"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "data.sampling": ("image", "instances", "proposals"),
}


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric key: finite, within the bounds given (ge/gt/le/lt), odd if
    `odd`. Whether the key is an integer is its annotation's business, not the rule's."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    odd: bool = False

    def contains(self, value: float) -> bool:
        return ((isinstance(value, int) or math.isfinite(value))  # a huge int has no float
                and (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt)
                and (not self.odd or value % 2 == 1))

    def describe(self, integer: bool) -> str:
        """E.g. 'an integer >= 1', 'an odd integer >= 1', 'a finite number in (0, 1]'."""
        noun = "a finite number"
        if integer:
            noun = "an odd integer" if self.odd else "an integer"
        low = ("[", self.ge) if self.ge is not None else ("(", self.gt) if self.gt is not None else None
        high = ("]", self.le) if self.le is not None else (")", self.lt) if self.lt is not None else None
        if low and high:
            return f"{noun} in {low[0]}{_number(low[1])}, {_number(high[1])}{high[0]}"
        if low:
            return f"{noun} {'>=' if low[0] == '[' else '>'} {_number(low[1])}"
        if high:
            return f"{noun} {'<=' if high[0] == ']' else '<'} {_number(high[1])}"
        return noun


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def _rule_key(key: str) -> str:
    """The RANGES / ORDERED key of a (possibly indexed) key: `sweep.kernels[2]` → `sweep.kernels`."""
    return re.sub(r"\[\d+\]", "", key)


# Every numeric key of every section (a list[int] key: each item), keyed like CHOICES (list
# positions dropped: `sweep.kernels[2]` → `sweep.kernels`); None stays allowed where the annotation
# allows it. tests/test_config_ranges.py fails for a numeric field missing here. A model's own options
# carry their rules in the builder's signature (`models/options.py`), with the limits only a builder
# can check (deconvnet: input_size a multiple of 32; skipnet: width 1.0 except on VGG16).
RANGES: dict[str, Range] = {
    "model.num_classes": Range(ge=1),
    "model.width": Range(gt=0),  # channel multiplier
    "data.crop_size": Range(ge=1),
    "data.resize": Range(ge=1),
    "data.scale_min": Range(gt=0),  # random scale factors (scale_min <= scale_max: ORDERED)
    "data.scale_max": Range(gt=0),
    "data.workers": Range(ge=0),  # 0: load in the main process
    "data.cache_mb": Range(ge=0),  # 0: no cache
    "data.extend": Range(ge=1),  # the box grows around its object, never shrinks
    "data.min_iou": Range(gt=0, le=1),
    "data.proposals": Range(ge=1),
    "data.proposal_side": Range(ge=16),  # pixels: selective search needs some image to segment
    "train.batch_size": Range(ge=1),
    "train.iterations": Range(ge=1),
    "train.epochs": Range(gt=0),
    "train.lr": Range(gt=0),
    "train.momentum": Range(ge=0, lt=1),  # 1 would never forget a gradient
    "train.weight_decay": Range(ge=0),
    "train.bias_lr_mult": Range(ge=0),  # 0 keeps the biases as initialised
    "train.bias_decay": Range(ge=0),  # 0: no weight decay on biases
    "train.warmup": Range(ge=0),  # 0: no warm-up
    "train.poly_power": Range(ge=0),  # 0: constant
    "train.step_size": Range(ge=1),
    "train.step_gamma": Range(gt=0, le=1),  # a decay: 1 keeps the rate, 0 would stop learning
    "train.accumulate": Range(ge=1),
    "train.seed": Range(ge=0, le=2**32 - 1),  # 32 bits: sampling.py seeds torch with seed·1000003 + epoch
    "train.val_every": Range(ge=1),  # the trainer takes step % every
    "train.log_every": Range(ge=1),
    "train.checkpoint_every": Range(ge=1),
    "train.max_val_images": Range(ge=1),
    # crf: CRFParams, which checks itself against these too.
    "crf.gaussian_sxy": Range(gt=0),  # kernel widths (pixels, colour levels)
    "crf.gaussian_compat": Range(ge=0),  # Potts weights
    "crf.bilateral_sxy": Range(gt=0),
    "crf.bilateral_srgb": Range(gt=0),
    "crf.bilateral_compat": Range(ge=0),
    "crf.iterations": Range(ge=0),  # 0: the network's probabilities unchanged
    "crf.min_prob": Range(gt=0, lt=1),  # the floor under -log p
    # sweep: SweepSection (skipseg/engine/sweep.py).
    "sweep.kernels": Range(ge=1, odd=True),  # each n of the n×n heads
    "sweep.score_map_count": Range(ge=0),  # 0: no score maps
    # pretrain: PretrainSection (skipseg/engine/pretrain.py).
    "pretrain.images": Range(ge=1),
    "pretrain.val_images": Range(ge=1),
    "pretrain.size": Range(ge=32),  # VGG16's five poolings need 32 px (Inception-v3 needs 75: its builder says so)
}

# Pairs of keys of one section whose values must be in order (low <= high).
ORDERED: tuple[tuple[str, str], ...] = (("data.scale_min", "data.scale_max"),)


def numeric_type(annotation: Any) -> type | None:
    """int or float for an int/float field (also `X | None`, `list[X]`), else None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list):
        kinds = {numeric_type(a) for a in typing.get_args(annotation) if a is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    return annotation if annotation in (int, float) else None


def range_problem(key: str, value: Any, annotation: Any, rule: Range | None = None) -> str | None:
    """"key 'K' must be <range>, got V" when `value` breaks `rule` (default: K's in RANGES), else
    None; lists item by item. Checks the type too, for sections built directly
    (`CRFParams(iterations=2.5)`)."""
    rule = rule or RANGES.get(_rule_key(key))
    kind = numeric_type(annotation)
    if rule is None or kind is None or value is None:
        return None
    if isinstance(value, list):
        return next((p for i, v in enumerate(value) if (p := range_problem(f"{key}[{i}]", v, kind, rule))), None)
    integer = kind is int
    typed = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if typed and rule.contains(value):
        return None
    return f"key '{key}' must be {rule.describe(integer)}, got {value!r}"


def check_ranges(section: Any, prefix: str) -> None:
    """Raise `SkipsegError` for the first field of dataclass `section` (at `prefix`) out of its range."""
    for name, annotation in _field_types(type(section)).items():
        problem = range_problem(f"{prefix}.{name}", getattr(section, name), annotation)
        if problem:
            raise SkipsegError(problem)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _at(source: str) -> str:
    return f"{source}: " if source else ""


def coerce_value(value: Any, annotation: Any, key: str, source: str = "") -> Any:
    """`value` checked against a field annotation (int, float, str, bool, X | None, list[X],
    dataclass) and converted where YAML is loose (an int for a float, 3e-3 read as a string);
    otherwise a `SkipsegError` "SOURCE: key 'K' must be ..., got V"."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce_value(value, option, key, source)
            except SkipsegError as exc:
                errors.append(exc)
        raise errors[0]
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, key, source)
    if origin is list:
        if not isinstance(value, list):
            raise SkipsegError(f"{_at(source)}key '{key}' must be a list, got {value!r}")
        (item,) = typing.get_args(annotation)
        return [coerce_value(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        return value
    raise SkipsegError(f"{_at(source)}key '{key}' must be {annotation.__name__}, got {value!r}")


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SkipsegError(f"{source}: key '{prefix}' must be a mapping, got {data!r}")
    hints = _field_types(cls)
    values: dict[str, Any] = {}
    rest = _rest_field(cls)
    if rest:  # the keys no other field names go there as written (null: not set)
        del hints[rest]
        values[rest] = {k: copy.deepcopy(v) for k, v in data.items() if k not in hints and v is not None}
    unknown = [] if rest else [k for k in data if k not in hints]
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise SkipsegError(
            f"{source}: unknown key '{where}{unknown[0]}'; valid keys"
            f"{' in ' + prefix if prefix else ''}: {', '.join(hints)}"
        )
    for name, annotation in hints.items():
        if name in data:
            key = f"{prefix}.{name}" if prefix else name
            values[name] = coerce_value(data[name], annotation, key, source)
            allowed = CHOICES.get(key)
            if allowed and values[name] is not None and values[name] not in allowed:
                raise SkipsegError(f"{source}: key '{key}' must be one of {', '.join(allowed)}, got {values[name]!r}")
            problem = range_problem(key, values[name], annotation)
            if problem:
                raise SkipsegError(f"{source}: {problem}")
    try:
        section = cls(**values)
    except SkipsegError as exc:  # a section that checks its own values (CRFParams)
        raise SkipsegError(f"{source}: {exc}") from None
    for low, high in ORDERED:  # with the defaults filled in: one key may come from the file, one not
        if low.rpartition(".")[0] == _rule_key(prefix):
            a, b = getattr(section, low.rpartition(".")[2]), getattr(section, high.rpartition(".")[2])
            if a is not None and b is not None and not a <= b:
                raise SkipsegError(f"{source}: key '{low}' must be <= {high} ({b!r}), got {a!r}")
    return section


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Set dotted `key=value` pairs (values parsed as YAML) into a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise SkipsegError(f"override '{item}': expected key=value, e.g. train.lr=0.01")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else None
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SkipsegError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = value
    return data


PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"  # the papers' and the demo's configs


def find_config(path: str | Path) -> Path:
    """`path` itself, else a bare file name of the configs that ship with skipseg (so
    `skipseg train fcn8s_voc.yaml` works from any folder); an error lists those."""
    path = Path(path)
    if path.is_file():
        return path
    if len(path.parts) == 1 and (PACKAGED_CONFIGS / path.name).is_file():
        return PACKAGED_CONFIGS / path.name
    shipped = ", ".join(sorted(p.name for p in PACKAGED_CONFIGS.glob("*.yaml")))
    raise SkipsegError(f"{path}: config file not found (shipped configs, usable by name: {shipped})")


def read_yaml(path: str | Path) -> dict:
    path = find_config(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise SkipsegError(f"{path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SkipsegError(f"{path}: top level must be a mapping of sections")
    return data


# `check(config, source)`: what a layer above checks once the keys are read, e.g. the model's own
# options against its builder (`models.registry.check_model_config`); errors start with `source`.
Check = Callable[[Any, str], None]


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (), cls: type = Config,
                check: Check | None = None) -> Any:
    """Read YAML (or start from defaults), apply overrides, and validate every key and type (and
    whatever `check` checks)."""
    data = read_yaml(path) if path else {}
    apply_overrides(data, overrides)
    source = str(path) if path else "config"
    if overrides:
        source += " + overrides"
    return config_from_dict(data, cls, source, check)


def _rest_field(cls: type) -> str | None:
    return next((f.name for f in dataclasses.fields(cls) if f.metadata.get(REST)), None)


def _plain(value: Any) -> Any:
    """`dataclasses.asdict`, but a rest field's keys sit in its section (`model: {name, kernel}`)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = _plain(getattr(value, f.name))
            if f.metadata.get(REST):
                out.update(item)
            else:
                out[f.name] = item
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return copy.deepcopy(value)


def config_to_dict(config: Any) -> dict:
    """The config as the plain nested dict its YAML file holds (reloadable by `config_from_dict`)."""
    return _plain(config)


def config_from_dict(data: dict, cls: type = Config, source: str = "checkpoint config",
                     check: Check | None = None) -> Any:
    """Validate a plain dict (e.g. a checkpoint's `config`) into `cls`; errors name `source`."""
    config = _build(cls, data, "", source)
    if check is not None:
        check(config, source)
    return config


def file_holds(path: Path, config: Any) -> bool:
    """Whether the YAML file at `path` holds `config` (read back as its class). Compared as configs,
    not text: a file written before `model:` options were kept apart lists them all as null."""
    try:
        return config_from_dict(yaml.safe_load(path.read_text()) or {}, type(config), str(path)) == config
    except (SkipsegError, yaml.YAMLError):
        return False


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The commit of the source tree skipseg runs from (None outside a git checkout)."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def save_run_config(run_dir: str | Path, config: Any) -> None:
    """Write the resolved config (`config.yaml`, reloadable) and provenance (`meta.json`)."""
    import torch

    run = RunDir(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    commit = git_commit()
    header = f"# resolved skipseg config; git commit {commit or 'unknown'}\n"
    run.config.write_text(header + yaml.safe_dump(config_to_dict(config), sort_keys=False))
    meta = {
        "git_commit": commit,
        "argv": sys.argv,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "host": platform.node(),
    }
    run.meta.write_text(json.dumps(meta, indent=2) + "\n")
