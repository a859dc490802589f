"""Config: YAML + dotted overrides, strict keys and types, saved with the git commit."""
from __future__ import annotations

import json

import pytest
import yaml

from skipseg.config import Config, config_from_dict, config_to_dict, load_config, save_run_config
from skipseg.errors import SkipsegError
from skipseg.models.registry import check_model_config


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
        load_config(bad, check=check_model_config)


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


def test_sampling_crf_and_sync_bn_keys(tmp_path):
    path = write(tmp_path, "data:\n  sampling: proposals\n  min_iou: 0.6\n  balance: true\ncrf:\n  iterations: 4\n")
    cfg = load_config(path, ["crf.bilateral_srgb=5", "train.sync_bn=false"])
    assert cfg.data.sampling == "proposals" and cfg.data.min_iou == 0.6 and cfg.data.balance
    assert (cfg.data.extend, cfg.data.proposals, cfg.data.proposal_cache) == (1.2, 50, None)
    assert cfg.crf.iterations == 4 and cfg.crf.bilateral_srgb == 5.0 and cfg.crf.gaussian_sxy == 3.0
    assert not cfg.train.sync_bn and Config().train.sync_bn and Config().data.sampling == "image"
    assert config_from_dict(config_to_dict(cfg)) == cfg
    with pytest.raises(SkipsegError, match=r"run.yaml \+ overrides: key 'crf.bilateral_sxy' must be a finite number > 0, "
                                           "got 0"):
        load_config(path, ["crf.bilateral_sxy=0"])
    with pytest.raises(SkipsegError, match="unknown key 'crf.sxy'; valid keys in crf: gaussian_sxy"):
        load_config(path, ["crf.sxy=1"])
    with pytest.raises(SkipsegError, match="'data.sampling' must be one of image, instances, proposals"):
        load_config(path, ["data.sampling=crops"])
    old = config_to_dict(Config())
    del old["crf"]  # a checkpoint from before the crf section
    assert config_from_dict(old).crf == Config().crf
