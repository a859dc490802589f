"""Configs as files: YAML read (a shipped config by its bare name too), `key=value` overrides
applied, each value checked and typed into the sections; a run's resolved `config.yaml` and its
provenance (`meta.json`) written back."""
from __future__ import annotations

import copy
import dataclasses
import json
import platform
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from skipseg.config.rules import CHOICES, ORDERED, field_types, rule_key, range_problem
from skipseg.config.sections import REST, Config
from skipseg.core.rundir import RunDir
from skipseg.errors import SkipsegError

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
    hints = field_types(cls)
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
        if low.rpartition(".")[0] == rule_key(prefix):
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


PACKAGED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"  # the papers' and the demo's configs


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
