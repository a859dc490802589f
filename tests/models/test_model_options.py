"""A model's own options: written once (its builder's signature), flat in `model:` beside the common
keys (`ModelConfig.options`), checked against the builder while the config loads, and typed as the
builder reads them; config.yaml keeps the flat mapping."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from skipseg.cli import main
from skipseg.config import Config, ModelConfig, config_from_dict, config_to_dict, load_config, save_run_config
from skipseg.core.rundir import RunDir, SweepDir
from skipseg.engine import sweep
from skipseg.errors import SkipsegError
from skipseg.inference.predictor import model_options as build_options
from skipseg.models.options import option_hints, split
from skipseg.models.registry import (COMMON_OPTIONS, build_model, check_model_config, get_entry, list_models,
                                     model_options, resolved_options)

ROOT = Path(__file__).resolve().parents[2]
VGG_FCNS = ("fcn32s", "fcn16s", "fcn8s", "fcn8s_atonce")
FCN8S_KEYS = ("name, num_classes, width, pretrained, weights, init_from, learnable_upsampling, original_padding, "
              "dropout, batch_norm")


def test_an_unknown_model_option_in_yaml_names_the_key_and_lists_the_valid_ones(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: {name: fcn8s, width: 0.5, kernel: 3}\n")
    with pytest.raises(SkipsegError) as info:
        load_config(path, check=check_model_config)
    assert str(info.value) == f"{path}: unknown key 'model.kernel'; valid keys in model (fcn8s): {FCN8S_KEYS}"
    assert load_config(path).model.options == {"kernel": 3}  # the config layer alone keeps it, unchecked
    with pytest.raises(SkipsegError, match=r"\+ overrides: key 'model.name': unknown model 'fcn4s'; valid models: "):
        load_config(path, ["model.name=fcn4s"], check=check_model_config)


def test_a_builders_own_check_runs_at_load_in_one_line():
    """DeconvNet's input_size (a multiple of 32, which a Range cannot say) fails while loading too."""
    own = [(name, key) for name in list_models() for key, annotation in option_hints(get_entry(name).builder).items()
           if any(callable(rule) for rule in split(annotation)[1])]
    assert own == [("deconvnet", "input_size")]
    for bad in ("100", "0", "-1"):
        with pytest.raises(SkipsegError, match=r"^config \+ overrides: deconvnet: input_size must be a multiple "
                                               rf"of 32 \(.*\), got {bad}$"):
            load_config(None, ["model.name=deconvnet", f"model.input_size={bad}"], check=check_model_config)
    assert load_config(None, ["model.name=deconvnet", "model.input_size=64"], check=check_model_config)


def test_model_config_names_exactly_the_common_options():
    named = [f.name for f in dataclasses.fields(ModelConfig) if f.name != "options"]
    assert named == ["name", *COMMON_OPTIONS]


@pytest.mark.parametrize("config, override, message", [
    ("fcn8s_shapes.yaml", "model.kernel=3", f"unknown key 'model.kernel'; valid keys in model (fcn8s): {FCN8S_KEYS}"),
    ("fcn8s_shapes.yaml", "model.dropout=2", "key 'model.dropout' must be a finite number in [0, 1), got 2.0"),
    ("fcn8s_shapes.yaml", "model.batch_norm=maybe", "key 'model.batch_norm' must be bool, got 'maybe'"),
    ("fcn8s_shapes.yaml", "model.name=fcn4s", "key 'model.name': unknown model 'fcn4s'; valid models: "
                                              "fcn32s, fcn16s, fcn8s, fcn8s_atonce, fcn32s_alexnet, fcn32s_googlenet, "
                                              "deconvnet, skipnet"),
    ("deconvnet_shapes.yaml", "model.grid=3", "overrides: unknown key 'model.grid'; valid keys in model "
                                              "(deconvnet): name, num_classes, width, pretrained, weights, "
                                              "init_from, input_size, decoder_width, decoder_init"),
    ("skip_inception_shapes.yaml", "model.cell_label=mode",
     "key 'model.cell_label' must be one of majority, centre, got 'mode'"),
    ("skip_inception_shapes.yaml", "model.kernel=4", "key 'model.kernel' must be an odd integer >= 1, got 4"),
])
def test_train_and_sweep_refuse_a_bad_model_option_before_anything_is_made(tmp_path, capsys, config, override,
                                                                           message):
    command = "sweep" if config.startswith("skip_") else "train"
    assert main([command, str(ROOT / "configs" / config), "--out", str(tmp_path / "run"), override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("skipseg: error: ") and "Traceback" not in err
    assert f"{config} + overrides" in err and err.rstrip().endswith(message), err
    assert not (tmp_path / "run").exists()  # refused before anything was made


def test_an_override_lands_in_options_typed_and_reaches_the_builder():
    overrides = ["model.name=skipnet", "model.backbone=resnet18", "model.head_channels=8", "model.grid=4",
                 "model.kernel=3", "model.tap=2", "model.mode=null"]
    raw = load_config(None, overrides)
    assert raw.model.options == {"backbone": "resnet18", "head_channels": 8, "grid": 4, "kernel": 3, "tap": 2}
    config = load_config(None, [*overrides, "model.kernel=5"], check=check_model_config)
    assert config.model.options == {"backbone": "resnet18", "head_channels": 8, "grid": 4, "kernel": 5, "tap": "2"}
    options = build_options(config)
    assert options == {"num_classes": 21, "width": 1.0, **config.model.options}
    with torch.device("meta"):
        model = build_model(config.model.name, **options)
    assert model.head.conv_tap.kernel_size == (5, 5) and model.grid == (4, 4) and model.tap == "layer1.0"
    resolved = resolved_options(config.model)
    assert resolved == {**model_options("skipnet"), **options}  # the rest: the builder's defaults
    assert (resolved["mode"], resolved["cell_label"]) == ("box", "majority")


def test_config_yaml_round_trips_flat(tmp_path):
    config = load_config(None, ["model.name=skipnet", "model.tap=4", "model.kernel=5", "model.input_size=null"],
                         check=check_model_config)
    save_run_config(tmp_path / "run", config)
    text = RunDir(tmp_path / "run").config.read_text()
    assert yaml.safe_load(text)["model"] == {"name": "skipnet", "num_classes": 21, "width": 1.0, "pretrained": None,
                                             "weights": None, "init_from": None, "tap": "4", "kernel": 5}
    assert "options" not in text
    assert load_config(RunDir(tmp_path / "run").config, check=check_model_config) == config
    assert config_from_dict(config_to_dict(config)) == config


OLD_MODEL_KEYS = ("learnable_upsampling", "original_padding", "dropout", "batch_norm", "backbone", "tap", "tap_names",
                  "top", "kernel", "head_channels", "grid", "mode", "input_size", "freeze_backbone",
                  "head_activation", "score_init", "cell_label", "score_upsampling")


def _old_style(config: Config) -> dict:
    """The config as skipseg wrote it while `model:` listed every model's options, unset ones null."""
    data = config_to_dict(config)
    data["model"] = {**{k: v for k, v in data["model"].items() if k not in OLD_MODEL_KEYS},
                     **{k: data["model"].get(k) for k in OLD_MODEL_KEYS}}
    return data


def test_a_config_written_with_every_option_null_still_loads_and_matches(tmp_path):
    old = _old_style(load_config(None, ["model.dropout=0"], check=check_model_config))
    assert old["model"]["kernel"] is None and old["model"]["dropout"] == 0.0
    assert config_from_dict(old, source="checkpoint config", check=check_model_config).model.options == {"dropout": 0.0}
    config = sweep.load_sweep_config(ROOT / "configs" / "skip_inception_voc.yaml")
    folder = SweepDir(tmp_path / "sweep")
    folder.path.mkdir()
    folder.config.write_text(yaml.safe_dump(_old_style(config), sort_keys=False))
    assert sweep.prepare(config, folder.path)  # the same sweep: continued, not "another config"
    other = sweep.load_sweep_config(ROOT / "configs" / "skip_inception_voc.yaml", ["model.grid=33"])
    with pytest.raises(SkipsegError, match="holds a sweep of another config"):
        sweep.prepare(other, folder.path)


def test_the_four_vgg16_fcns_declare_one_option_set():
    options = [model_options(name) for name in VGG_FCNS]
    assert all(o == options[0] for o in options)
    assert list(options[0]) == [*COMMON_OPTIONS, "learnable_upsampling", "original_padding", "dropout", "batch_norm"]
    assert (options[0]["dropout"], options[0]["batch_norm"]) == (0.5, False)
    hints = [option_hints(get_entry(name).builder) for name in VGG_FCNS]
    assert all(h == hints[0] for h in hints)
    assert [get_entry(name).builder.__name__ for name in VGG_FCNS] == list(VGG_FCNS)
