"""Every path only a CUDA machine takes, as named checks in one run of at most 5 minutes.

    python -m bench.gpu_check --out gpu_check.json    # = make gpu-check
    python -m bench.gpu_check --dry-run               # the plan: every check's commands (no GPU needed)

Each command (real `skipseg` command lines) runs in its own subprocess with a timeout; the run ends
within --budget seconds (300): a command still running then is killed, checks not reached are
"skipped: budget". Writes --out (JSON) after every check; exit 0 when all passed, 1 otherwise, 2
without CUDA (writing nothing).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import yaml

from bench.common import ROOT, machine_info, make_scratch

BUDGET_S, MIN_START_S = 300.0, 10.0  # a command started with less than MIN_START_S left would only be killed
MARK = "gpu_check-observed: "  # prefix of the line on which `--observe` prints its record
PY = sys.executable
CLASSES, SIZE, STEPS, SKIP_SIZE = 6, 64, 5, 79  # data classes (+ background), image side, steps; Inception >= 75
BENCH_OUT = ROOT / "bench" / "results" / "quick.json"  # where `make bench BENCH_ARGS=--quick` writes (git-ignored)
TRAINED = {"finite": True, "channels_last": True, "weights_channels_last": True}


@dataclass(frozen=True)
class Check:
    """A named check: commands run in order, a time limit for all, what it needs, reads and expects."""

    name: str
    commands: list[list[str]]
    timeout_s: float
    needs: tuple[str, ...] = ()  # checks whose output it uses: not run when one did not pass
    configs: tuple[Path, ...] = ()  # the repository configs it reads
    want: tuple[dict, ...] = ()  # per observed command: figure -> the value it must have
    extra: Callable[[dict], dict] | None = None  # more figures from the last command's result
    note: str | None = None


def configs_dir() -> Path:
    """skipseg's configs: `skipseg.demo.CONFIGS` (which follows them if they move), else configs/."""
    import skipseg.demo

    configs = Path(getattr(skipseg.demo, "CONFIGS", ROOT / "configs"))
    return configs if configs.is_dir() else ROOT / "configs"


def length(steps: int, prefix: str = "train") -> list[str]:
    return [f"{prefix}.{key}={steps}" for key in ("iterations", "val_every", "checkpoint_every")]


def model_run(name: str, configs: Path, scratch: Path) -> tuple[Path, Path, list[str], list[list[str]]]:
    """(config it trains from, the repository config behind it, overrides, commands to run first)."""
    if name == "deconvnet":  # staged: instance crops, then proposal crops, a few steps each
        config = configs / "deconvnet_shapes.yaml"
        return config, config, [o for s in ("stage1", "stage2") for o in length(STEPS, f"stages.{s}.train")], []
    if name == "skipnet":  # the study's config without its sweep section, written by the demo's helper
        write = [PY, "-c", "import sys, pathlib, skipseg.demo as d; d.write_configs(pathlib.Path(sys.argv[1]))",
                 str(scratch)]
        sized = [f"{k}={SKIP_SIZE}" for k in ("model.input_size", "data.resize", "data.crop_size")]
        return (scratch / "configs" / "skip_backbone.yaml", configs / "skip_inception_shapes.yaml",
                [*sized, "model.grid=9", "model.tap=6", *length(STEPS)], [write])
    from skipseg.models.registry import model_options

    own = configs / f"{name}_shapes.yaml"
    base = own if own.is_file() else configs / "fcn8s_shapes.yaml"  # e.g. fcn32s_alexnet: an FCN config
    options = model_options(name)  # the base config's model keys this model lacks are unset (null)
    unset = [f"model.{k}=" for k in yaml.safe_load(base.read_text())["model"] if k != "name" and k not in options]
    return base, base, [f"model.name={name}", f"data.crop_size={SIZE}", *unset, *length(STEPS)], []


def plan(scratch: Path, gpus: int = 1) -> list[Check]:
    """Every check with its commands, in run order; `gpus` (CUDA devices seen) sets torchrun's ranks."""
    import torch

    from skipseg import list_models
    from skipseg.inference.pipeline import default_proposal_batch

    configs, runs, data, nproc = configs_dir(), scratch / "runs", scratch / "data", 2 if gpus >= 2 else 1
    common = [f"data.root={data}", f"model.num_classes={CLASSES + 1}", "data.workers=0", "train.log_every=1"]

    def train(config: Path, run: str, *overrides: str, nproc: int = 0, flags: tuple = ()) -> list[str]:
        launcher = [PY, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc else [PY]
        return [*launcher, "-m", "bench.gpu_check", "--observe", *flags, "train", str(config), "--out",
                str(runs / run), *common, "--no-progress", *overrides]

    checks = [Check("data", [[PY, "-m", "skipseg", "data", "shapes", str(data), "--train", "16", "--val", "4",
                              "--size", str(SIZE), "--classes", str(CLASSES)]], 60)]
    for name in list_models():
        config, source, overrides, first = model_run(name, configs, scratch)
        command = train(config, name, "train.device=cuda", "train.precision=bf16", *overrides)
        checks.append(Check(f"train_bf16[{name}]", [*first, command], 120, ("data",), (source,),
                            ({**TRAINED, "amp_dtype": "torch.bfloat16"},)))
    fcn8s, crop = configs / "fcn8s_shapes.yaml", f"data.crop_size={SIZE}"
    fp16 = {**TRAINED, "amp_dtype": "torch.float16", "grad_scaler": True}
    # train.device=auto = cuda:LOCAL_RANK on each rank (cuda would put every rank on GPU 0)
    ddp = ["train.device=auto", "train.sync_bn=true", "model.batch_norm=true", crop, *length(STEPS)]
    ddp_want = {"world_size": nproc, "steps": STEPS, "finite": True, "amp_dtype": "torch.bfloat16",
                **({"ddp": True, "backend": "nccl", "all_bn_synced": True} if nproc > 1 else {})}
    evaluate = [PY, "-m", "bench.gpu_check", "--observe", "evaluate", str(runs / "deconvnet"), "--proposals", "10",
                "--max-images", "2", "--out", str(scratch / "eval"), "--device", "cuda", "--no-progress"]
    export = [PY, "-m", "skipseg", "export", str(runs / "fcn8s"), "--onnx", str(scratch / "fcn8s.onnx"),
              "--size", str(SIZE), str(SIZE), "--json"]
    resume = [PY, "-m", "bench.gpu_check", "--observe", "train", "--resume", str(runs / "fp16"), *length(8)]
    return checks + [
        Check("fp16_resume[fcn8s]", [train(fcn8s, "fp16", "train.device=cuda", "train.precision=fp16", crop,
                                           *length(4)), resume], 150, ("data",), (fcn8s,),
              want=({**fp16, "steps": 4}, {**fp16, "start_step": 4, "steps": 4, "scale_restored": True})),
        Check("torchrun_ddp[fcn8s]", [train(fcn8s, "ddp", *ddp, nproc=nproc)], 150, ("data",), (fcn8s,),
              want=(ddp_want,), note=None if nproc > 1 else "one rank: skipseg joins no process group, so no DDP "
              "and no SyncBatchNorm; sync_bn[fcn8s] covers nccl and the conversion"),
        Check("sync_bn[fcn8s]", [train(fcn8s, "sync_bn", *ddp, nproc=1, flags=("--sync-bn",))], 150,
              ("data",), (fcn8s,), want=({"all_bn_synced": True, "backend": "nccl", "finite": True},)),
        Check("proposals[deconvnet]", [evaluate], 120, ("train_bf16[deconvnet]",),
              want=({"images": 2, "proposal_batch": default_proposal_batch(torch.device("cuda"))},)),
        Check("onnx_export[fcn8s]", [export], 150, ("train_bf16[fcn8s]",),
              extra=lambda r: json.loads(r["stdout"][r["stdout"].index("{"):])),  # `export --json`'s report
        Check("bench_quick", [[PY, "-m", "bench.run", "--quick", "--device", "cuda", "--out", str(BENCH_OUT)]],
              BUDGET_S, extra=lambda r: {"exit_code": r["rc"], "wrote": str(BENCH_OUT), "failed_parts": [
                  n for n, p in json.loads(BENCH_OUT.read_text())["parts"].items() if "error" in p]}),
    ]


def run_command(argv: list[str], timeout: float) -> dict:
    """Run one command in its own process group, killed whole on timeout (torchrun's ranks too)."""
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        (out, err), rc = proc.communicate(timeout=timeout), proc.returncode  # left to right: set by then
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        (out, err), rc = proc.communicate(), None
    records = [json.loads(line[len(MARK):]) for line in out.splitlines() if line.startswith(MARK)]
    return {"rc": rc, "observed": {k: v for r in records for k, v in r.items()}, "stdout": out, "stderr": err}


def run_check(check: Check, deadline: float, failed: set[str]) -> dict:
    """Run a check's commands until one fails; then its figures and verdict."""
    start, results = time.monotonic(), []
    error = next((f"not run: needs {n}, which did not pass" for n in check.needs if n in failed), None)
    for argv in [] if error else check.commands:
        left = min(deadline, start + check.timeout_s) - time.monotonic()
        if left < MIN_START_S:
            error = "skipped: budget" if not results else f"budget ran out after {len(results)} command(s)"
            break
        results.append(last := run_command(argv, left))
        if last["rc"] is None:
            error = f"timed out after {left:.0f} s"
        elif last["rc"] != 0:  # its one line: the last that says 'error' (skipseg's own), else the last
            lines = [x.strip() for x in (last["stderr"] or last["stdout"]).splitlines() if x.strip()] or ["no output"]
            error = f"exit {last['rc']}: " + next((x for x in reversed(lines) if "error" in x.lower()), lines[-1])[:300]
        if error:
            break
    figs = [r["observed"] for r in results if r["observed"]]
    figures: dict = {"runs": figs} if len(figs) > 1 else (figs[0] if figs else {})
    for i, wanted in enumerate(() if error or not results else check.want):
        got = figs[i] if i < len(figs) else {}
        if wrong := next((k for k, v in wanted.items() if got.get(k) != v), None):
            error = f"{wrong} = {got.get(wrong)!r}, expected {wanted[wrong]!r}" + f" (run {i + 1})" * (len(figs) > 1)
            break
    try:
        figures.update(check.extra(results[-1]) if check.extra and results else {})
    except Exception as exc:  # a command that failed halfway leaves its output incomplete: say so, go on
        error = error or f"figures: {type(exc).__name__}: {exc}"
    tail = (results[-1]["stderr"] or results[-1]["stdout"]).splitlines()[-15:] if error and results else None
    return {"name": check.name, "ok": error is None, "seconds": round(time.monotonic() - start, 2), "error": error,
            "figures": figures, "note": check.note, "commands": list(map(shlex.join, check.commands)), "log_tail": tail}


def observe(argv: list[str]) -> int:
    """`skipseg ARGV` in this process; rank 0 then prints what the run resolved and measured. With
    `--sync-bn` alone under torchrun (one GPU holds one nccl rank), it joins an nccl group of 1 (skipseg's
    all-reduces then run over it) and lets `sync_batchnorm` see world size 2 (it converts only above 1)."""
    import torch
    import torch.distributed as dist
    from torch import nn

    from skipseg.cli import main as skipseg_main
    from skipseg.engine import trainer
    from skipseg.inference import aggregate

    seen: dict[str, Any] = {}
    sync = torch.cuda.synchronize if torch.cuda.is_available() else lambda: None
    train_step, proposal_probs, convert = trainer.Trainer._train_step, aggregate.proposal_probs, trainer.sync_batchnorm
    if argv[:1] == ["--sync-bn"]:
        argv = argv[1:]
        if not dist.is_initialized() and os.environ.get("WORLD_SIZE") == "1":
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            trainer.sync_batchnorm = lambda model, rt, on=True: convert(model, replace(rt, world_size=2), on)

    def observed_step(self: trainer.Trainer, batches: list) -> float:
        rt, scaler, modules = self.runtime, self.scaler, list(self.model.modules())
        if "device" not in seen:  # the first step of the first training (a staged run has several)
            conv = next(m for m in modules if isinstance(m, nn.Conv2d))
            bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules)
            synced = sum(isinstance(m, nn.SyncBatchNorm) for m in modules)
            seen.update(device=str(rt.device), amp_dtype=str(rt.amp_dtype), channels_last=rt.channels_last,
                        weights_channels_last=conv.weight.is_contiguous(memory_format=torch.channels_last),
                        grad_scaler=scaler.is_enabled(), world_size=rt.world_size, ddp=self.net is not self.model,
                        backend=dist.get_backend() if dist.is_initialized() else None, start_step=self.step,
                        batch_norm=bn, sync_batch_norm=synced, all_bn_synced=bn > 0 and synced == bn,
                        scale_start=scaler.get_scale() if scaler.is_enabled() else None)
            if self.step and scaler.is_enabled():  # resumed: the scale must be the checkpoint's, not the initial one
                saved = torch.load(self.run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
                seen["scale_restored"] = saved["scaler"].get("scale") == scaler.get_scale()
        start = time.perf_counter()
        loss = train_step(self, batches)  # a Python float: the step has synchronised
        seen.setdefault("step_s", []).append(time.perf_counter() - start)
        seen.setdefault("losses", []).append(loss)
        seen["scale_end"] = scaler.get_scale() if scaler.is_enabled() else None
        return loss

    def observed_probs(*args: Any, **kwargs: Any) -> Any:
        sync()
        start = time.perf_counter()
        probs = proposal_probs(*args, **kwargs)
        sync()  # the time of all the crops' forwards, not of their launches
        seen.setdefault("proposal_s", []).append(time.perf_counter() - start)
        seen.update(proposal_batch=kwargs.get("batch_size"), crops_per_image=len(args[2]))
        return probs

    trainer.Trainer._train_step, aggregate.proposal_probs = observed_step, observed_probs
    try:
        return skipseg_main(argv)
    finally:  # what it printed: scalars as they are, losses and timings summarised
        losses, times, proposal_s = (seen.pop(k, []) for k in ("losses", "step_s", "proposal_s"))
        if losses:
            seen.update(steps=len(losses), losses=[round(x, 5) for x in losses],
                        finite=all(math.isfinite(x) for x in losses), decreased=losses[-1] < losses[0])
        if times[1:]:  # the first step warms up (cuDNN autotuning, allocator)
            seen["step_s_median"] = statistics.median(times[1:])
        if proposal_s:
            seen.update(images=len(proposal_s), seconds_per_image=statistics.mean(proposal_s))
        if os.environ.get("RANK", "0") == "0":
            print(MARK + json.dumps(seen), flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--observe"]:
        return observe(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON (default gpu_check.json)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds after which no check starts (300)")
    parser.add_argument("--dry-run", action="store_true", help="print every check's commands and exit")
    args = parser.parse_args(argv)
    import torch
    import torchvision

    sys.stdout.reconfigure(line_buffering=True)  # a line per check as it ends, also into a pipe or log
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.dry_run:
        for check in plan(Path("SCRATCH"), gpus):
            print(f"{check.name}  (timeout {check.timeout_s:.0f} s; needs {', '.join(check.needs) or 'nothing'})")
            print("\n".join(f"  $ {shlex.join(command)}" for command in check.commands))
        return 0
    if not gpus:
        print(f"gpu_check: no CUDA device (torch {torch.__version__} sees none); run it on a GPU machine",
              file=sys.stderr)
        return 2
    machine = machine_info(torch.device("cuda"))  # CPU, torch, git commit and the GPU's name, memory, capability
    result: dict[str, Any] = {
        "check": "skipseg GPU check", "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "torchvision": torchvision.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "gpu": {**machine.get("gpu", {}), "count": gpus},
        "budget_s": args.budget, "machine": machine, "checks": []}
    deadline, failed, checks = time.monotonic() + args.budget, set(), result["checks"]
    with make_scratch() as scratch:
        for check in plan(Path(scratch), gpus):
            checks.append(record := run_check(check, deadline, failed))
            failed |= set() if record["ok"] else {check.name}
            shown = record["error"] or ", ".join(f"{k}={v}" for k, v in record["figures"].items()
                                                 if isinstance(v, (int, float, str)) and not isinstance(v, bool))
            print(f"{'PASS' if record['ok'] else 'FAIL'}  {check.name:<26} {record['seconds']:6.1f} s  {shown}"[:200])
            skipped = sum(c["error"] == "skipped: budget" for c in checks)
            result["summary"] = {"total": len(checks), "passed": len(checks) - len(failed),
                                 "failed": len(failed) - skipped, "skipped_budget": skipped}
            tmp = args.out.with_name(f"{args.out.name}.tmp")  # a reader never sees half a file
            tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
            os.replace(tmp, args.out)
    print(f"gpu_check: {result['summary']['passed']}/{len(checks)} passed -> {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
