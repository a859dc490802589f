"""Typed run configuration: YAML file + dotted `key=value` overrides; unknown keys, wrong types and
numbers out of their range (RANGES) are errors, each one line naming the key. A model's own options
(`model.kernel`, ...) are its builder's: a layer above checks them (`load_config(..., check=...)`).

    cfg = load_config("configs/fcn8s_shapes.yaml", ["train.lr=0.01", "model.width=0.25"])
    save_run_config(run_dir, cfg)   # config.yaml (reloadable) + meta.json (git commit, versions, argv)
"""
from skipseg.config.files import (PACKAGED_CONFIGS, Check, apply_overrides, coerce_value, config_from_dict,
                                  config_to_dict, file_holds, find_config, git_commit, load_config, read_yaml,
                                  save_run_config)
from skipseg.config.rules import CHOICES, ORDERED, RANGES, Range, check_ranges, numeric_type, range_problem
from skipseg.config.sections import REST, Config, CRFParams, DataConfig, ModelConfig, TrainConfig

__all__ = ["CHOICES", "CRFParams", "Check", "Config", "DataConfig", "ModelConfig", "ORDERED", "PACKAGED_CONFIGS",
           "RANGES", "REST", "Range", "TrainConfig", "apply_overrides", "check_ranges", "coerce_value",
           "config_from_dict", "config_to_dict", "file_holds", "find_config", "git_commit", "load_config",
           "numeric_type", "range_problem", "read_yaml", "save_run_config"]
