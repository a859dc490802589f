"""Every numeric config key has a valid range, checked when the config is loaded: a bad value is one
line naming the key, the value and the range (`SkipsegError`; the CLI exits 2, no traceback).

The numeric keys are found by walking the config dataclasses and the builders' signatures (a model's
own options, their rules in the annotations), so a key added later cannot escape."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from skipseg.cli import main
from skipseg.config import RANGES, Config, Range, TrainConfig, load_config
from skipseg.engine.pretrain import PretrainConfig
from skipseg.engine.stages import StagedConfig, has_stages, load_staged_config, stage_configs
from skipseg.engine.sweep import SweepConfig, load_sweep_config
from skipseg.errors import SkipsegError
from skipseg.inference.crf import CRFParams
from skipseg.models.options import option_hints, split
from skipseg.models.registry import COMMON_OPTIONS, check_model_config, get_entry, list_models, model_options

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = (Config, SweepConfig, StagedConfig, PretrainConfig)  # every class a config file is loaded into


@dataclass(frozen=True)
class NumericField:
    """One numeric key: its path (a list of dataclasses is marked `[]`), int or float, whether it is
    a list of numbers, whether null is allowed, and its default."""

    parts: tuple[str, ...]
    kind: type
    is_list: bool
    optional: bool
    default: Any
    model: str | None = None  # set for a model's own option: the model whose builder declares it
    own_rule: Range | None = None  # that option's rule, from the builder's annotation
    own_check: bool = False  # the annotation also holds a function of the builder's own (its own words)

    @property
    def key(self) -> str:  # as RANGES spells it
        return ".".join(p.removesuffix("[]") for p in self.parts)

    @property
    def rule(self) -> Range | None:
        return self.own_rule if self.model else RANGES.get(self.key)

    @property
    def check(self) -> Callable | None:  # a model's options: checked against its builder while loading
        return check_model_config if self.model else None

    def overrides(self, value: str) -> list[str]:
        """The overrides that set the key to `value` (a model's option: for its model)."""
        return [*([f"model.name={self.model}"] if self.model else []), self.override(value)]

    def override(self, value: str) -> str:
        """`key=value`, the part below a list of sections written as a YAML flow value."""
        for i, part in enumerate(self.parts):
            if part.endswith("[]"):
                head = ".".join(p.removesuffix("[]") for p in self.parts[: i + 1])
                return f"{head}=[{_flow(self.parts[i + 1:], value)}]"
        return f"{self.key}={value}"


def _flow(parts: tuple[str, ...], value: str) -> str:
    if not parts:
        return value
    name = parts[0].removesuffix("[]")
    inner = _flow(parts[1:], value)
    return f"{{{name}: {'[' + inner + ']' if parts[0].endswith('[]') else inner}}}"


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(annotation without `| None`, whether None was allowed)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


def numeric_fields(cls: type, parts: tuple[str, ...] = ()) -> list[NumericField]:
    """Every int/float field (also optional, and lists of them) reachable from dataclass `cls`."""
    found = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        annotation, optional = _unwrap(hints[f.name])
        is_list = typing.get_origin(annotation) is list
        item = typing.get_args(annotation)[0] if is_list else annotation
        item, _ = _unwrap(item)
        path = (*parts, f.name)
        if dataclasses.is_dataclass(item):
            found += numeric_fields(item, path[:-1] + (f"{f.name}[]",) if is_list else path)
        elif item in (int, float):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            found.append(NumericField(path, item, is_list, optional, default))
    return found


def model_option_fields() -> list[NumericField]:
    """Every numeric option of every registered builder beyond the common ones (`ModelConfig` types those)."""
    found = []
    for name in list_models():
        defaults = model_options(name)
        for option, annotation in option_hints(get_entry(name).builder).items():
            plain, rules = split(annotation)
            base, optional = _unwrap(plain)
            is_list = typing.get_origin(base) is list
            item = typing.get_args(base)[0] if is_list else base
            if option not in COMMON_OPTIONS and item in (int, float):
                rule = next((r for r in rules if isinstance(r, Range)), None)
                found.append(NumericField(("model", option), item, is_list, optional, defaults[option], name, rule,
                                          any(callable(r) for r in rules)))
    return found


def all_numeric_fields() -> list[tuple[type, NumericField]]:
    unique = {}
    for cls in TOP_LEVEL:
        for numeric in numeric_fields(cls):
            unique.setdefault(numeric.key, (cls, numeric))
    return list(unique.values()) + [(Config, numeric) for numeric in model_option_fields()]


FIELDS = all_numeric_fields()


def missing_rules(cls: type) -> list[str]:
    return [n.key for n in numeric_fields(cls) if n.key not in RANGES]


def test_the_walk_finds_the_known_numeric_keys():
    keys = {numeric.key for _, numeric in FIELDS}
    assert {"train.lr", "train.iterations", "model.dropout", "data.crop_size", "crf.min_prob",
            "sweep.kernels", "train.max_val_images"} <= keys
    rules = {numeric.key for _, numeric in FIELDS if numeric.rule is not None}
    assert len(keys) == len(rules) >= 39
    assert "model.name" not in keys and "train.sync_bn" not in keys  # neither str nor bool


def test_every_numeric_field_has_a_range_rule():
    for cls in TOP_LEVEL:
        assert missing_rules(cls) == [], f"numeric keys of {cls.__name__} without a rule in config.RANGES"
    unruled = [f"{n.model}: {n.key}" for _, n in FIELDS if n.model and n.rule is None and not n.own_check]
    assert unruled == [], "numeric model options without a Range (or a check) in their builder's annotation"
    own = {numeric.key for _, numeric in FIELDS if numeric.model is None}
    assert sorted(RANGES) == sorted(own)  # no rule for a key that is not there, none for a model's own option


@dataclass
class _MoreTrain(TrainConfig):
    label_smoothing: float = 0.0
    ratios: list[int] | None = None


@dataclass
class _MoreConfig(Config):
    train: _MoreTrain = field(default_factory=_MoreTrain)


def test_a_new_numeric_field_without_a_rule_is_caught():
    assert missing_rules(_MoreConfig) == ["train.label_smoothing", "train.ratios"]


def _bad_values(numeric: NumericField) -> list[tuple[str, str]]:
    """(YAML text, how the error shows the value): not finite, below every range, and just outside
    the key's own rule on each side it has."""
    bad = ([("nan", "nan"), (".nan", "nan"), (".inf", "inf"), ("-.inf", "-inf")] if numeric.kind is float
           else [("-1", "-1")])
    rule = numeric.rule
    if rule is not None:
        step = 1 if numeric.kind is int else 0.5
        for outside in (None if rule.ge is None else rule.ge - step, rule.gt,
                        None if rule.le is None else rule.le + step, rule.lt):
            if outside is not None:
                value = numeric.kind(outside)
                bad.append((repr(value), repr(value)))
        if rule.odd:
            bad.append(("4", "4"))
    if numeric.is_list:
        bad = [(f"[{text}]", shown) for text, shown in bad]
    return list(dict.fromkeys(bad))


def _id(numeric: NumericField) -> str:  # a model's option: once per model
    return f"{numeric.model}:{numeric.key}" if numeric.model else numeric.key


BAD = [pytest.param(cls, numeric, text, shown, id=f"{_id(numeric)}={text}")
       for cls, numeric in FIELDS if numeric.rule is not None for text, shown in _bad_values(numeric)]


@pytest.mark.parametrize("cls, numeric, text, shown", BAD)
def test_every_numeric_key_rejects_a_bad_value_in_one_line(cls, numeric, text, shown):
    with pytest.raises(SkipsegError) as info:
        load_config(None, numeric.overrides(text), cls=cls, check=numeric.check)
    message = str(info.value)
    assert message.startswith("config + overrides: key ") and "\n" not in message
    assert f"'{numeric.key}" in message and message.endswith(f"got {shown}"), message
    assert f"must be {numeric.rule.describe(numeric.kind is int)}" in message, message


@pytest.mark.parametrize("cls, numeric", [pytest.param(c, n, id=_id(n)) for c, n in FIELDS])
def test_defaults_are_in_range_and_null_stays_allowed(cls, numeric):
    text = yaml.safe_dump(numeric.default, default_flow_style=True).strip().removesuffix("...").strip()
    load_config(None, numeric.overrides(text), cls=cls, check=numeric.check)
    if numeric.optional:
        load_config(None, numeric.overrides("null"), cls=cls, check=numeric.check)
    if numeric.kind is float and numeric.rule.contains(0.5):  # YAML 1.1 reads 5e-1 as a string
        assert load_config(None, numeric.overrides("5e-1"), cls=cls, check=numeric.check) is not None


def test_crf_params_check_themselves_with_the_same_rules():
    for f in dataclasses.fields(CRFParams):
        bad = -1 if f.type == "int" else math.nan
        with pytest.raises(SkipsegError, match=rf"^key 'crf.{f.name}' must be .*, got {bad}$"):
            CRFParams(**{f.name: bad})
    with pytest.raises(SkipsegError, match=r"^key 'crf.iterations' must be an integer >= 0, got 2.5$"):
        CRFParams(iterations=2.5)
    assert CRFParams(gaussian_compat=0, iterations=0).iterations == 0


def test_scale_min_must_not_exceed_scale_max():
    with pytest.raises(SkipsegError, match=r"key 'data.scale_min' must be <= data.scale_max \(0.3\), got 0.5$"):
        load_config(None, ["data.scale_max=0.3"])
    assert load_config(None, ["data.scale_min=1", "data.scale_max=1"]).data.scale_max == 1.0


def _staged(tmp_path: Path, stage_train: str) -> Path:
    path = tmp_path / "staged.yaml"
    path.write_text("model: {name: deconvnet, input_size: 32}\ndata: {crop_size: 32}\n"
                    f"stages:\n  - name: one\n  - name: two\n    train: {stage_train}\n")
    return path


def test_a_bad_value_inside_a_stage_names_the_stage_and_the_key(tmp_path):
    with pytest.raises(SkipsegError) as info:
        load_staged_config(_staged(tmp_path, "{lr: .nan}"))
    assert str(info.value) == (f"{tmp_path / 'staged.yaml'}, stage 'two': key 'train.lr' must be a finite "
                               "number > 0, got nan")
    path = _staged(tmp_path, "{iterations: 3}")
    with pytest.raises(SkipsegError, match=r"\+ overrides, stage 'two': key 'train.iterations' must be an integer "
                                           r">= 1, got -5$"):
        load_staged_config(path, ["stages.two.train.iterations=-5"])
    stage_data = path.read_text().replace("  - name: one\n", "  - name: one\n    data: {scale_min: 3}\n")
    path.write_text(stage_data)
    with pytest.raises(SkipsegError, match=r"stage 'one': key 'data.scale_min' must be <= data.scale_max"):
        load_staged_config(path)
    assert [name for name, _ in stage_configs(load_staged_config(path, ["data.scale_max=4"]), None)] == ["one", "two"]


def test_sweep_kernels_each_odd():
    config = ROOT / "configs" / "skip_inception_shapes.yaml"
    with pytest.raises(SkipsegError, match=r"key 'sweep.kernels\[1\]' must be an odd integer >= 1, got 0$"):
        load_sweep_config(config, ["sweep.kernels=[3, 0]"])
    with pytest.raises(SkipsegError, match=r"key 'sweep.score_map_count' must be an integer >= 0, got -1$"):
        load_sweep_config(config, ["sweep.score_map_count=-1"])


CONFIG_FILES = sorted({p.resolve(): p for folder in (ROOT / "configs", ROOT / "skipseg" / "configs")
                       for p in folder.glob("*.yaml")}.values())


def test_there_are_config_files():
    assert len(CONFIG_FILES) >= 11


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_loads(path):
    if has_stages(path):
        stage_configs(load_staged_config(path), None)
    elif "sweep" in yaml.safe_load(path.read_text()):
        load_sweep_config(path)
    else:
        load_config(path, check=check_model_config)


@pytest.mark.parametrize("override, key, shown", [("train.lr=nan", "train.lr", "nan"),
                                                  ("train.iterations=-5", "train.iterations", "-5")])
def test_cli_train_prints_one_line_and_exits_2(tmp_path, capsys, override, key, shown):
    config = str(ROOT / "configs" / "fcn8s_shapes.yaml")
    assert main(["train", config, "--out", str(tmp_path / "run"), override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("skipseg: error: ") and "Traceback" not in err
    assert f"key '{key}'" in err and err.rstrip().endswith(f"got {shown}")
    assert not (tmp_path / "run").exists()  # refused before anything was made


def test_cli_train_rejects_a_bad_stage_value(tmp_path, capsys):
    config = str(ROOT / "configs" / "deconvnet_shapes.yaml")
    assert main(["train", config, "--out", str(tmp_path / "run"), "stages.stage1.train.iterations=0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stage 'stage1': key 'train.iterations' must be an integer >= 1, got 0" in err
