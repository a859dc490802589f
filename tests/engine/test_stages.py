"""Staged training (DeconvNet's two stages in one config): stage configs and overrides, the run
layout, stage 2 from stage 1's weights, skipping and exact resume, RUN standing for its final stage,
the crop sampling modes with class balance, the CRF section, SyncBatchNorm under DDP."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from skipseg.cli import main
from skipseg.config import load_config
from skipseg.core.checkpoint import load_checkpoint, resolve_checkpoint
from skipseg.core.rundir import RunDir
from skipseg.engine.logbook import read_metrics
from skipseg.core.runtime import Runtime, sync_batchnorm
from skipseg.engine.stages import load_staged_config, run_stages, stage_configs
from skipseg.engine.trainer import Trainer, build_train_set
from skipseg.errors import SkipsegError
from skipseg.inference.predictor import model_from_checkpoint

STAGED = """\
model: {{name: deconvnet, num_classes: 21, width: 0.0625, input_size: 32}}
data: {{root: {root}, crop_size: 32, scale_min: 1.0, scale_max: 1.0, workers: 0}}
train: {{batch_size: 3, iterations: 2, optimizer: adam, lr: 1.0e-3, weight_decay: 0.0, log_every: 1,
        val_every: 100, checkpoint_every: 100, precision: fp32, channels_last: false}}
crf: {{iterations: 2, bilateral_sxy: 15}}
stages:
  - name: stage1
    data: {{sampling: instances, balance: true}}
  - name: stage2
    data: {{sampling: proposals, proposals: 15, min_iou: 0.4}}
    train: {{iterations: 4}}
"""


@pytest.fixture
def staged_yaml(tmp_path, shapes_root):
    path = tmp_path / "staged.yaml"
    path.write_text(STAGED.format(root=shapes_root))
    return path


def stage_losses(run_dir) -> list[float]:
    return [row["loss"] for row in read_metrics(run_dir) if row["split"] == "train"]


def test_stage_configs_and_overrides(staged_yaml, tmp_path):
    config = load_staged_config(staged_yaml, ["train.iterations=5", "train.lr=0.01",
                                              "stages.stage1.data.extend=1.5"])
    (n1, c1), (n2, c2) = stage_configs(config, tmp_path / "run")
    assert (n1, n2) == ("stage1", "stage2")
    assert c1.data.sampling == "instances" and c1.data.balance and c1.data.extend == 1.5
    assert c2.data.sampling == "proposals" and c2.data.proposals == 15 and c2.data.extend == 1.2
    assert c1.train.iterations == c2.train.iterations == 5  # the command line wins over the stage
    assert c1.train.lr == c2.train.lr == 0.01 and c1.model.init_from is None
    assert c2.model.init_from == str(tmp_path / "run" / "stage1" / "checkpoints" / "last.pt")


@pytest.mark.parametrize("override, fragment", [
    ("stages.stage1.data.sampling=crops", "stage 'stage1': key 'data.sampling' must be one of image, instances"),
    ("stages.stage2.train.lrr=1", "stage 'stage2': unknown key 'train.lrr'; valid keys in train: batch_size"),
    ("stages.nope.train.lr=1", "expected stages.NAME.key=value with NAME one of stage1, stage2"),
    ("stages.stage1.name=stage2", "stage name 'stage2' is used twice"),
    ("stages.stage1.name=check/points", "must be a folder name"),
    ("stages=[]", "must list at least one stage"),
])
def test_bad_staged_configs_are_clear_errors(staged_yaml, override, fragment):
    with pytest.raises(SkipsegError) as info:
        load_staged_config(staged_yaml, [override])
    assert fragment in str(info.value)


def test_a_stage_cannot_change_the_model(staged_yaml):
    staged_yaml.write_text(staged_yaml.read_text().replace("    train: {iterations: 4}", "    model: {width: 1}"))
    with pytest.raises(SkipsegError, match=r"unknown key 'stages\[1\].model'; valid keys in stages\[1\]: name, data"):
        load_staged_config(staged_yaml)


def test_two_stages_resume_exactly_and_run_is_the_final_stage(staged_yaml, tmp_path, shapes_root, capsys):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["train", str(staged_yaml), "--out", str(straight), "--no-progress"]) == 0
    assert "[2/2] stage2" in capsys.readouterr().out
    marker = json.loads((straight / "stages.json").read_text())
    assert marker == {"stages": ["stage1", "stage2"], "final": "stage2", "completed": ["stage1", "stage2"]}
    assert load_checkpoint(straight / "stage1", prefer="last")["step"] == 2
    assert load_checkpoint(straight / "stage2", prefer="last")["step"] == 4

    def stop(trainer, step, loss):
        if trainer.run_dir.name == "stage2" and step == 2:
            trainer.request_stop()

    config = load_staged_config(staged_yaml)
    first = run_stages(config, resumed, progress=False, callbacks=(stop,))
    assert first["stopped"] and [s["name"] for s in first["stages"]] == ["stage1", "stage2"]
    assert json.loads((resumed / "stages.json").read_text())["completed"] == ["stage1"]
    assert main(["train", "--resume", str(resumed), "data.workers=1", "--no-progress"]) == 0
    assert "stage1: complete, skipped" in capsys.readouterr().out
    for stage in ("stage1", "stage2"):  # stage 2 started from stage 1's weights and resumed exactly
        assert stage_losses(resumed / stage) == stage_losses(straight / stage)
    a = load_checkpoint(straight, prefer="last")["model"]
    b = load_checkpoint(resumed, prefer="last")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    # RUN stands for its final stage: checkpoint resolution, evaluate (CRF from the config), init_from
    assert RunDir(straight).final() == RunDir(straight / "stage2")
    assert resolve_checkpoint(straight, prefer="last") == straight / "stage2" / "checkpoints" / "last.pt"
    model, run_config, _ = model_from_checkpoint(straight, prefer="last")
    assert run_config.data.sampling == "proposals" and model.input_size == (32, 32)
    out = tmp_path / "eval"
    assert main(["evaluate", str(straight), "--crf", "--crf-params", "iterations=1", "--out", str(out),
                 "--no-progress", "--workers", "0"]) == 0
    params = json.loads((out / "metrics.json").read_text())["crf_params"]
    assert params["iterations"] == 1 and params["bilateral_sxy"] == 15.0 and params["gaussian_sxy"] == 3.0
    # the same command again: nothing left to train; another config into the same folder: refused
    assert main(["train", str(staged_yaml), "--out", str(straight), "--no-progress"]) == 0
    assert "(0 trained now)" in capsys.readouterr().out
    assert main(["train", str(staged_yaml), "train.lr=0.1", "--out", str(straight)]) == 2
    assert "holds a staged run of another config" in capsys.readouterr().err


def test_unfinished_final_stage_and_single_run_folders(staged_yaml, tmp_path, shapes_root):
    config = load_staged_config(staged_yaml, ["stages.stage1.train.iterations=1"])

    def stop_at_once(trainer, step, loss):
        trainer.request_stop()

    run_stages(config, tmp_path / "run", progress=False, callbacks=(stop_at_once,))
    with pytest.raises(SkipsegError, match="final stage 'stage2' has no checkpoint yet"):
        resolve_checkpoint(tmp_path / "run")
    single = load_config(None, [f"data.root={shapes_root}", "model.width=0.0625", "data.crop_size=32",
                                "data.workers=0", "train.iterations=1", "train.batch_size=2", "train.val_every=5"])
    Trainer(single, tmp_path / "single", progress=False).run()
    with pytest.raises(SkipsegError, match="holds a single"):
        run_stages(config, tmp_path / "single", progress=False)


def test_crop_sampling_is_deterministic_and_checked(tmp_path, shapes_root):
    base = [f"data.root={shapes_root}", "model.name=deconvnet", "model.input_size=32", "data.crop_size=32",
            "data.workers=0"]
    config = load_config(None, base + ["data.sampling=instances", "data.balance=true", "data.resize=40"])
    first, second = build_train_set(config, tmp_path), build_train_set(config, tmp_path)
    assert first.ids == second.ids and len(first) > len(first.source)  # rare classes repeated
    torch.manual_seed(0)
    image, mask = first[3]
    assert image.shape == (3, 32, 32) and mask.shape == (32, 32)
    proposals = load_config(None, base + ["data.sampling=proposals", "data.proposals=10", "data.min_iou=0.3"])
    crops = build_train_set(proposals, tmp_path / "run")
    assert len(crops) > 0 and len(list((tmp_path / "run" / "proposals").glob("*.npy"))) == 16
    with pytest.raises(SkipsegError, match="data.balance: class balance repeats object crops"):
        build_train_set(load_config(None, base + ["data.balance=true"]), tmp_path)
    with pytest.raises(SkipsegError, match="data.crop_size: data.sampling=instances needs a crop size"):
        build_train_set(load_config(None, base + ["data.sampling=instances", "data.crop_size=null"]), tmp_path)
    wrong = load_config(None, base + ["data.crop_size=48", "train.batch_size=2"])
    with pytest.raises(SkipsegError, match="data.crop_size: 48, but deconvnet takes 32x32 inputs"):
        Trainer(wrong, tmp_path / "wrong", progress=False)


def test_sync_batchnorm_only_under_ddp_on_gpus():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    cpu_ddp = Runtime(torch.device("cpu"), None, False, 0, 2)
    gpu_alone = Runtime(torch.device("cuda"), None, False, 0, 1)
    gpu_ddp = Runtime(torch.device("cuda"), None, False, 1, 2)
    assert sync_batchnorm(model, cpu_ddp) is model  # PyTorch's SyncBatchNorm runs on GPUs only
    assert sync_batchnorm(model, gpu_alone) is model and sync_batchnorm(model, gpu_ddp, enabled=False) is model
    converted = sync_batchnorm(model, gpu_ddp)
    assert isinstance(converted[1], nn.SyncBatchNorm) and converted.state_dict().keys() == model.state_dict().keys()
    plain = nn.Sequential(nn.Conv2d(3, 4, 3))
    assert sync_batchnorm(plain, gpu_ddp) is plain


def test_paper_and_cpu_configs():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs"
    voc = stage_configs(load_staged_config(root / "deconvnet_voc.yaml"), "RUN")
    (_, one), (_, two) = voc
    assert (one.data.sampling, one.train.iterations, two.data.sampling, two.train.iterations) == \
        ("instances", 20000, "proposals", 40000)
    for cfg in (one, two):
        assert (cfg.data.resize, cfg.data.crop_size, cfg.model.options["input_size"], cfg.data.extend) == \
            (250, 224, 224, 1.2)
        assert cfg.train.batch_size * cfg.train.accumulate == 64 and cfg.data.balance and cfg.data.flip
        assert (cfg.train.optimizer, cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay) == ("sgd", 0.01, 0.9, 5e-4)
        assert cfg.train.lr_schedule == "step" and cfg.crf.bilateral_sxy == 20.0 and cfg.crf.iterations == 10
    assert two.model.init_from == "RUN/stage1/checkpoints/last.pt"
    for _, cfg in stage_configs(load_staged_config(root / "deconvnet_shapes.yaml"), "RUN"):
        size = cfg.model.options["input_size"]
        assert cfg.data.crop_size == size and cfg.data.resize == round(size * 250 / 224) and size % 32 == 0
