"""bench.gpu_check without a GPU: the no-CUDA exit, the plan (every model, valid commands, existing
configs), and the runner (timeouts, budget, verdicts, the JSON) on stand-in commands."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is no installed package: plain `pytest` does not put the checkout on the path
    sys.path.insert(0, str(ROOT))

import bench.gpu_check as gpu_check  # noqa: E402
from skipseg import list_models
from skipseg.cli import build_parser
from skipseg.config import load_config
from skipseg.demo import write_configs
from skipseg.engine import stages
from skipseg.inference.predictor import model_options
from skipseg.models.registry import check_options

NO_CUDA = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # torch then sees no GPU, also on a GPU machine


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.gpu_check", *args], cwd=ROOT, env=NO_CUDA,
                          capture_output=True, text=True, timeout=120)


def test_without_cuda_exits_2_with_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu_check.json"
    result = run_module("--out", str(out))
    assert result.returncode == 2
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == [f"gpu_check: no CUDA device (torch {torch.__version__} sees none); run it on a GPU machine"]
    assert not out.exists() and not list(tmp_path.iterdir())


def test_plan_trains_every_registered_model_in_bf16_on_cuda(tmp_path):
    checks = gpu_check.plan(tmp_path)
    names = [c.name for c in checks]
    assert len(set(names)) == len(names)
    trained = {c.name[len("train_bf16["):-1]: c for c in checks if c.name.startswith("train_bf16[")}
    assert set(trained) == set(list_models())
    for check in trained.values():
        command = check.commands[-1]
        assert "train.precision=bf16" in command and "train.device=cuda" in command
        assert check.want[0]["amp_dtype"] == "torch.bfloat16" and check.want[0]["channels_last"]
    for name in ("data", "fp16_resume[fcn8s]", "torchrun_ddp[fcn8s]", "sync_bn[fcn8s]", "proposals[deconvnet]",
                 "onnx_export[fcn8s]", "bench_quick"):
        assert name in names
    assert [c for c in checks if c.name == "torchrun_ddp[fcn8s]"][0].commands[0][2] == "torch.distributed.run"
    assert "--nproc_per_node=2" in gpu_check.plan(tmp_path, gpus=4)[names.index("torchrun_ddp[fcn8s]")].commands[0]


def test_every_planned_command_is_valid_and_its_configs_exist(tmp_path):
    write_configs(tmp_path)  # what the skipnet check's first command writes
    parser = build_parser()
    for check in gpu_check.plan(tmp_path):
        assert all(path.is_file() for path in check.configs), check.name
        for argv in check.commands:
            if "skipseg" not in argv and "--observe" not in argv:
                continue
            at = argv.index("--observe") + 1 if "--observe" in argv else argv.index("skipseg") + 1
            args, extra = parser.parse_known_args([a for a in argv[at:] if a != "--sync-bn"])
            assert all("=" in item for item in extra), argv
            if args.command == "train" and not args.resume:  # every override is a valid key of a valid type
                overrides = [*args.overrides, *extra]
                if stages.has_stages(args.config):
                    config = stages.load_staged_config(args.config, overrides)
                else:
                    config = load_config(args.config, overrides)
                check_options(config.model.name, model_options(config))
                assert config.model.num_classes == gpu_check.CLASSES + 1


def test_dry_run_prints_each_check_and_its_commands():
    result = run_module("--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for check in gpu_check.plan(Path("SCRATCH"), 0):
        assert any(line.startswith(f"{check.name}  (timeout") for line in lines)
        for argv in check.commands:
            assert f"  $ {shlex.join(argv)}" in lines
    yamls = [Path(a) for line in lines if line.startswith("  $ ") for a in shlex.split(line[4:]) if a.endswith(".yaml")]
    assert yamls and all(p.is_file() for p in yamls if not str(p).startswith("SCRATCH"))


def fake(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_run_check_timeout_budget_needs_and_verdicts(monkeypatch):
    monkeypatch.setattr(gpu_check, "MIN_START_S", 0.5)
    start = time.monotonic()
    record = gpu_check.run_check(gpu_check.Check("hang", [fake("import time; time.sleep(60)")], 60),
                                 time.monotonic() + 2, set())
    assert record["error"] == "timed out after 2 s" and not record["ok"] and time.monotonic() - start < 20
    late = gpu_check.run_check(gpu_check.Check("late", [fake("pass")], 60), time.monotonic(), set())
    assert late["error"] == "skipped: budget"
    blocked = gpu_check.run_check(gpu_check.Check("b", [fake("pass")], 60, needs=("a",)), time.monotonic() + 60, {"a"})
    assert blocked["error"] == "not run: needs a, which did not pass"
    boom = fake("import sys; print('x'); sys.exit('skipseg: error: boom')")  # exit 1, the message on stderr
    failing = gpu_check.run_check(gpu_check.Check("f", [boom], 60), time.monotonic() + 60, set())
    assert failing["error"] == "exit 1: skipseg: error: boom" and failing["log_tail"]
    mark = f"print({gpu_check.MARK!r} + '{json.dumps({'finite': False, 'steps': 3})}')"
    wrong = gpu_check.run_check(gpu_check.Check("w", [fake(mark)], 60, want=({"finite": True},)),
                                time.monotonic() + 60, set())
    assert wrong["error"] == "finite = False, expected True" and wrong["figures"] == {"finite": False, "steps": 3}


def test_main_writes_the_json_and_exits_1_when_a_check_fails(tmp_path, monkeypatch):
    mark = f"print({gpu_check.MARK!r} + '{json.dumps({'finite': True})}')"
    checks = [gpu_check.Check("good", [fake(mark)], 30, want=({"finite": True},)),
              gpu_check.Check("hang", [fake("import time; time.sleep(60)")], 60),
              gpu_check.Check("late", [fake("pass")], 60)]
    monkeypatch.setattr(gpu_check, "MIN_START_S", 1.0)
    monkeypatch.setattr(gpu_check, "plan", lambda scratch, gpus: checks)
    monkeypatch.setattr(gpu_check, "machine_info", lambda device: {"gpu": {"name": "Stand-in GPU"}})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91000)
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out), "--budget", "4"]) == 1
    result = json.loads(out.read_text())
    assert result["gpu"] == {"name": "Stand-in GPU", "count": 1}
    assert {"torch", "torchvision", "cuda", "cudnn"} <= set(result)
    assert [(c["name"], c["ok"]) for c in result["checks"]] == [("good", True), ("hang", False), ("late", False)]
    assert result["checks"][1]["error"].startswith("timed out") and result["checks"][2]["error"] == "skipped: budget"
    assert set(result["checks"][0]) >= {"name", "ok", "seconds", "error", "figures"}
    assert result["summary"] == {"total": 3, "passed": 1, "failed": 1, "skipped_budget": 1}
