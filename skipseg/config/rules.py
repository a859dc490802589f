"""What a valid config value is: the choices of string keys, the ranges of numeric keys (one line
each, with why where it is not obvious) and the pairs that must be in order."""
from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from skipseg.errors import SkipsegError

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


def rule_key(key: str) -> str:
    """The RANGES / ORDERED key of a (possibly indexed) key: `sweep.kernels[2]` → `sweep.kernels`."""
    return re.sub(r"\[\d+\]", "", key)


# Every numeric key of every section (a list[int] key: each item), keyed like CHOICES (list
# positions dropped: `sweep.kernels[2]` → `sweep.kernels`); None stays allowed where the annotation
# allows it. tests/config/test_config_ranges.py fails for a numeric field missing here. A model's own options
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
    rule = rule or RANGES.get(rule_key(key))
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
    for name, annotation in field_types(type(section)).items():
        problem = range_problem(f"{prefix}.{name}", getattr(section, name), annotation)
        if problem:
            raise SkipsegError(problem)


def field_types(cls: type) -> dict[str, Any]:
    """`{field: annotation}` of a config section (a dataclass), forward references resolved."""
    return typing.get_type_hints(cls)
