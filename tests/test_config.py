"""Config: YAML + dotted overrides, strict keys and types, saved with the git commit."""
from __future__ import annotations

import json

import pytest
import yaml

from skipseg.config import Config, config_from_dict, config_to_dict, load_config, save_run_config
from skipseg.errors import SkipsegError


def write(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_are_typed(tmp_path):
    path = write(tmp_path, "model:\n  name: fcn16s\n  width: 0.25\ntrain:\n  lr: 1.0e-3\n")
    cfg = load_config(path, ["train.iterations=7", "model.width=0.5", "data.crop_size=null"])
    assert cfg.model.name == "fcn16s" and cfg.model.width == 0.5
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.train.iterations == 7
    assert cfg.data.crop_size is None
    assert isinstance(load_config(path, ["model.width=1"]).model.width, float)


@pytest.mark.parametrize("override, fragment", [
    ("train.lrr=1", "unknown key 'train.lrr'; valid keys in train: batch_size"),
    ("modle.name=x", "unknown key 'modle'; valid keys: model, data, train"),
    ("train.iterations=ten", "key 'train.iterations' must be int, got 'ten'"),
    ("train.optimizer=rmsprop", "key 'train.optimizer' must be one of sgd, adam"),
    ("train.lr", "expected key=value"),
])
def test_bad_keys_are_clear_errors(tmp_path, override, fragment):
    path = write(tmp_path, "train:\n  lr: 0.1\n")
    with pytest.raises(SkipsegError) as info:
        load_config(path, [override])
    assert fragment in str(info.value)


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(SkipsegError, match="missing.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = write(tmp_path, "model: [unclosed\n")
    with pytest.raises(SkipsegError, match=r"run.yaml: not valid YAML \(line"):
        load_config(bad)
    bad.write_text("model:\n  name: fcn8s\n  colour: red\n")
    with pytest.raises(SkipsegError, match=r"run.yaml: unknown key 'model.colour'"):
        load_config(bad)


def test_saved_config_reloads_identically_and_records_commit(tmp_path):
    cfg = load_config(None, ["model.name=fcn32s", "train.seed=3"])
    save_run_config(tmp_path / "run", cfg)
    text = (tmp_path / "run" / "config.yaml").read_text()
    assert text.startswith("# resolved skipseg config; git commit")
    assert load_config(tmp_path / "run" / "config.yaml") == cfg
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert {"git_commit", "argv", "torch"} <= set(meta)
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert yaml.safe_load(text)["model"]["name"] == "fcn32s"
    assert Config() == load_config(None)
