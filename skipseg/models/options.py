"""A builder's options, read from its signature: the one place a model's option is written, with its
type, its default and, where the type does not say everything, its rules (`typing.Annotated`): a
`config.Range`, a `OneOf`, or a function of the value that raises `SkipsegError` in its own words
(what a Range cannot say, e.g. DeconvNet's "a multiple of 32"):

    def skipnet(..., kernel: OddSize = 3, mode: Annotated[str, OneOf(MODES)] = "box", ...)

`check_value` holds a value to such an annotation with the config's own words ("key 'model.kernel'
must be an odd integer >= 1, got 4"), so a model's option in `model:` reads like any config key,
although the config layer below never sees the builders.
"""
from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Sequence

from skipseg.config import Range, coerce_value, numeric_type, range_problem
from skipseg.errors import SkipsegError


@dataclass(frozen=True)
class OneOf:
    """The rule of a string option: one of `values`."""

    values: tuple[str, ...]


Dropout = Annotated[float, Range(ge=0, lt=1)]  # a probability; 1 would zero fc6/fc7 entirely
OddSize = Annotated[int, Range(ge=1, odd=True)]  # odd: "same" padding keeps the tap's grid
Count = Annotated[int, Range(ge=1)]  # channels, cells, pixels
Multiplier = Annotated[float, Range(gt=0)]  # a channel width


def option_hints(builder: Callable) -> dict[str, Any]:
    """`{option: annotation}` of every parameter of `builder`, rules kept; one without an annotation
    is taken as bool when its default is a bool (as the registry always did), else as anything."""
    hints = typing.get_type_hints(builder, include_extras=True)
    params = inspect.signature(builder).parameters
    return {k: hints.get(k, bool if isinstance(p.default, bool) else Any) for k, p in params.items()}


def split(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    """(the annotation without its `Annotated` wrappers, the rules they carried), through `X | None`."""
    if typing.get_origin(annotation) is Annotated:
        base, *rules = typing.get_args(annotation)
        return base, tuple(rules)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        parts = [split(a) for a in typing.get_args(annotation)]
        return typing.Union[tuple(p for p, _ in parts)], tuple(r for _, rules in parts for r in rules)
    return annotation, ()


def check_value(key: str, value: Any, annotation: Any, source: str = "", own: bool = True) -> Any:
    """`value` checked against `annotation` and typed (`config.coerce_value`: an int for a float,
    a number for a string); else a `SkipsegError` "SOURCE: key 'KEY' must be ..., got VALUE". With
    `own`, the annotation's functions check it too (their errors in their own words)."""
    plain, rules = split(annotation)
    value = coerce_value(value, plain, key, source)
    at = f"{source}: " if source else ""
    for rule in rules:
        if isinstance(rule, Range) and (problem := range_problem(key, value, plain, rule)):
            raise SkipsegError(at + problem)
        if isinstance(rule, OneOf) and value is not None and value not in rule.values:
            raise SkipsegError(f"{at}key '{key}' must be one of {', '.join(rule.values)}, got {value!r}")
    if own:
        check_own(value, annotation, source)
    return value


def check_own(value: Any, annotation: Any, source: str = "") -> None:
    """Run the annotation's functions on `value` (a null is the builder's default: not checked)."""
    for rule in split(annotation)[1]:
        if callable(rule) and value is not None:
            try:
                rule(value)
            except SkipsegError as exc:
                raise SkipsegError(f"{source}: {exc}" if source else str(exc)) from None


_NOUNS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list"}


def expected(annotation: Any) -> str:
    """What an option takes, in words: 'an odd integer >= 1', 'one of box, pixel', 'true or false'."""
    plain, rules = split(annotation)
    args = typing.get_args(plain) if typing.get_origin(plain) in (typing.Union, types.UnionType) else (plain,)
    kinds = [a for a in args if a is not type(None)]
    words = [r.describe(numeric_type(plain) is int) if isinstance(r, Range) else f"one of {', '.join(r.values)}"
             for r in rules if isinstance(r, (Range, OneOf))]  # a function's words are its errors
    if not words:
        words = [_NOUNS.get(typing.get_origin(k) or k, getattr(k, "__name__", str(k))) for k in kinds]
    return " or ".join(words + (["null"] if len(kinds) < len(args) else []))


def checked_options(options: dict[str, Any], hints: dict[str, Any], source: str, owner: str,
                    named: Sequence[str]) -> dict[str, Any]:
    """A `model:` mapping's own options (`options`, nulls left out) checked against `hints` (the
    builder's own options, `option_hints`) and typed. An unknown key names `owner` (the model) and
    lists the valid keys: `named` (what the config section names itself) and the builder's own."""
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:  # null: the builder's default
            continue
        if key not in hints:
            valid = ", ".join([*named, *hints])
            raise SkipsegError(f"{source}: unknown key 'model.{key}'; valid keys in model ({owner}): {valid}")
        checked[key] = check_value(f"model.{key}", value, hints[key], source)
    return checked
