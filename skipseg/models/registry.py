"""The model registry: a plain dict name → builder function, filled by `@register_model`.

Every builder takes `num_classes=21, width=1.0, pretrained=None, weights=None, init_from=None`
plus options of its own (keyword arguments with defaults), and returns a module whose forward maps
`x [N,3,H,W]` (ImageNet-normalised RGB) to logits `[N,num_classes,H,W]`, with attributes
`num_classes` and `backbone` (a `backbones.Backbone`). The builders' signatures are the options,
the only list of them (types and rules: `options.py`): `build_model` checks its keyword arguments
against them, `check_model_config` a config's `model:` mapping, so errors list what is valid.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from skipseg.config import ModelConfig
from skipseg.errors import SkipsegError
from skipseg.models.options import check_own, check_value, checked_options, expected, option_hints

# Modules whose import registers models; a new family of models adds its module here.
MODEL_MODULES = ("skipseg.models.fcn", "skipseg.models.deconvnet", "skipseg.models.skipnet")

COMMON_OPTIONS = ("num_classes", "width", "pretrained", "weights", "init_from")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    description: str


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, description: str) -> Callable:
    """Decorator: register `builder` under `name` with a one-line description."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS and MODELS[name].builder is not builder:
            raise ValueError(f"model {name!r} is registered twice")
        missing = [o for o in COMMON_OPTIONS if o not in inspect.signature(builder).parameters]
        if missing:
            raise TypeError(f"builder of {name!r} lacks the common options {missing}")
        option_hints(builder)  # an annotation that does not resolve fails here, at import
        MODELS[name] = ModelEntry(name, builder, description)
        return builder

    return decorate


def _load() -> dict[str, ModelEntry]:
    """Every model, in MODEL_MODULES order (whichever module some caller happened to import first)."""
    for module in MODEL_MODULES:
        importlib.import_module(module)
    rank = {module: i for i, module in enumerate(MODEL_MODULES)}
    order = sorted(MODELS.values(), key=lambda e: rank.get(e.builder.__module__, len(rank)))
    return {entry.name: entry for entry in order}


def list_models() -> dict[str, str]:
    """`{name: one-line description}` of every registered model, in registration order."""
    return {name: entry.description for name, entry in _load().items()}


def get_entry(name: str) -> ModelEntry:
    models = _load()
    if name not in models:
        raise SkipsegError(f"unknown model {name!r}; valid models: {', '.join(models)}")
    return models[name]


def model_options(name: str) -> dict[str, Any]:
    """`{option: default}` for a model (its builder's keyword arguments)."""
    params = inspect.signature(get_entry(name).builder).parameters
    return {key: p.default for key, p in params.items()}


def _invalid(model: str, key: str, value: Any, what: str) -> SkipsegError:
    return SkipsegError(f"model.{key}: {value!r} is invalid for {model}, expected {what}")


def _check_common(model: str, key: str, value: Any) -> None:
    def bad(what: str) -> SkipsegError:
        return _invalid(model, key, value, what)

    if key == "num_classes":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad("an integer >= 1")
    elif key == "width":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise bad("a number > 0")
    elif key == "pretrained":
        if value not in (None, False, "imagenet", "imagenet_bn", "shapes"):
            raise bad("'imagenet', 'imagenet_bn' (deconvnet), 'shapes' or null")
    elif key in ("weights", "init_from"):
        if value is not None and not isinstance(value, (str, Path)):
            raise bad("a file path or null")


def check_options(name: str, options: dict[str, Any]) -> None:
    """Raise `SkipsegError` for an unknown model, an unknown option or a value its annotation does
    not allow (type, range, choice)."""
    hints = option_hints(get_entry(name).builder)
    for key, value in options.items():
        if key not in hints:
            raise SkipsegError(f"model {name!r} has no option {key!r}; valid options: {', '.join(hints)}")
        if key in COMMON_OPTIONS:
            _check_common(name, key, value)
            continue
        try:
            check_value(key, value, hints[key], own=False)
        except SkipsegError:
            raise _invalid(name, key, value, expected(hints[key])) from None
        check_own(value, hints[key])  # the builder's own checks say what is wrong themselves


def config_options(model: ModelConfig, source: str = "config") -> dict[str, Any]:
    """`model.options` (a config's `model:` keys beyond the common ones) checked against the
    builder of `model.name` and typed as its signature says; errors name the key and list the
    valid ones ("SOURCE: unknown key 'model.colour'; valid keys in model (fcn8s): name, ...")."""
    try:
        builder = get_entry(model.name).builder
    except SkipsegError as exc:
        raise SkipsegError(f"{source}: key 'model.name': {exc}") from None
    own = {k: v for k, v in option_hints(builder).items() if k not in COMMON_OPTIONS}
    return checked_options(model.options, own, source, model.name, ("name", *COMMON_OPTIONS))


def check_model_config(config: Any, source: str = "config") -> None:
    """`config.model` checked against its builder, its options then kept typed (`tap: 4` → "4",
    nulls dropped) as the config layer typed every key before: `load_config(path,
    check=check_model_config)` fails while loading, before any data is read or model built."""
    config.model.options = config_options(config.model, source)


def resolved_options(model: ModelConfig) -> dict[str, Any]:
    """Every option of the model's builder: the config's value where it sets one, else the default."""
    common = {k: getattr(model, k) for k in COMMON_OPTIONS}
    return {**model_options(model.name), **common, **config_options(model)}


def build_model(name: str, **options: Any) -> nn.Module:
    """Build a registered model; unknown names and options are `SkipsegError`s listing valid ones."""
    check_options(name, options)
    return get_entry(name).builder(**options)
