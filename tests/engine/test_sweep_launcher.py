"""`skipseg sweep --launcher local|slurm`: submitit runs the unfinished runs; resume and --collect unchanged."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from skipseg.cli import main
from skipseg.engine import launch
from skipseg.errors import SkipsegError

from test_sweep import tiny_sweep  # the 2-configuration sweep: noskip, tap2_k3


@pytest.mark.slow
def test_local_launcher_runs_reports_a_failure_with_its_log_and_resumes(tmp_path, shapes_root, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what every task inherits
    config, out = tiny_sweep(tmp_path, shapes_root), tmp_path / "out"
    broken = out / "runs" / "tap2_k3" / "checkpoints" / "last.pt"  # a corrupt checkpoint: that run fails
    broken.parent.mkdir(parents=True)
    broken.write_text("not a checkpoint")
    command = ["sweep", str(config), "--out", str(out), "--launcher", "local", "--jobs", "2", "--no-progress"]

    assert main(command) == 2
    captured = capsys.readouterr()
    error = captured.err.strip().splitlines()
    assert len(error) == 1 and "1 run(s) not completed: tap2_k3 (exit code 2, log " in error[0]
    assert "run the same command again to continue" in error[0]
    log = Path(error[0].split(", log ")[1].split(")")[0])
    assert log.parent == out / "launcher" and "not a readable checkpoint" in log.read_text()
    assert (out / "runs" / "noskip" / "metrics.json").is_file()
    jobs = json.loads((out / "launcher" / "jobs.json").read_text())
    assert sorted(jobs) == ["noskip", "tap2_k3"] and jobs["tap2_k3"]["stderr"] == str(log)
    assert "started noskip" in captured.out and "FAILED tap2_k3" in captured.out

    # --collect without the failed run names its launcher log
    assert main(["sweep", "--collect", str(out), "--no-score-maps", "--report-out", str(tmp_path / "partial")]) == 0
    assert f"missing tap2_k3: local job {jobs['tap2_k3']['job_id']}, log {log}" in capsys.readouterr().out

    broken.unlink()
    stamp = (out / "runs" / "noskip" / "metrics.json").stat().st_mtime_ns
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "2 run(s), 1 already complete" in printed and "started noskip" not in printed
    assert "started tap2_k3" in printed and "finished tap2_k3" in printed
    assert (out / "runs" / "noskip" / "metrics.json").stat().st_mtime_ns == stamp  # not retrained
    metrics = json.loads((out / "runs" / "tap2_k3" / "metrics.json").read_text())
    assert metrics["tap"] == "layer1.0" and metrics["iterations"] == 2
    assert (out / "runs" / "tap2_k3" / "config.yaml").is_file()  # an ordinary run folder
    table1 = (out / "report" / "table1.csv").read_text().splitlines()
    assert [row.split(",")[:3] for row in table1[1:]] == [["No connection", "top only", "—"], ["2", "layer1.0", "3"]]
    assert json.loads((out / "report" / "summary.json").read_text())["missing"] == []


def _fake_slurm(folder: Path) -> Path:
    """`sbatch` that keeps the script it is given and answers as SLURM does; `srun` that exists."""
    folder.mkdir()
    (folder / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {folder}/submitted.sh\necho "Submitted batch job 4242"\n')
    (folder / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (folder / tool).chmod(0o755)
    return folder


def test_slurm_launcher_submits_one_array_and_returns(tmp_path, shapes_root, capsys, monkeypatch):
    from submitit.core.utils import DelayedSubmission

    bin_dir = _fake_slurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config, out = tiny_sweep(tmp_path, shapes_root), tmp_path / "out"
    assert main(["sweep", str(config), "--out", str(out), "--launcher", "slurm", "--partition", "gpu", "--time", "90",
                 "--array-parallelism", "1", "--cpus-per-job", "4", "--slurm-option", "account=proj"]) == 0
    printed = capsys.readouterr().out
    assert "submitted SLURM job array 4242: 2 task(s)" in printed and f"--collect {out}" in printed
    script = (bin_dir / "submitted.sh").read_text()
    for line in ("--array=0-1%1", "--gpus-per-node=1", "--partition=gpu", "--time=90", "--account=proj",
                 "--cpus-per-task=4", "--nodes=1", "--ntasks-per-node=1", f"--output={out / 'launcher'}/%A_%a_0_log.out"):
        assert f"#SBATCH {line}\n" in script, line
    jobs = json.loads((out / "launcher" / "jobs.json").read_text())
    assert {name: entry["job_id"] for name, entry in jobs.items()} == {"noskip": "4242_0", "tap2_k3": "4242_1"}

    # each array task's pickle is one ordinary run of the plan; run task 0 here as a node would
    tasks = [DelayedSubmission.load(out / "launcher" / f"4242_{i}_submitted.pkl").function for i in (0, 1)]
    assert [t.name for t in tasks] == ["noskip", "tap2_k3"]
    assert tasks[1].command[1:] == ["-m", "skipseg", "sweep", str(out.absolute() / "sweep.yaml"), "--out",
                                    str(out.absolute()), "--no-progress", "--only", "tap2_k3"]
    assert tasks[1].env == {"OMP_NUM_THREADS": "4"}
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tasks[0].env["OMP_NUM_THREADS"] = "1"
    assert tasks[0]() == "noskip" and (out / "runs" / "noskip" / "metrics.json").is_file()
    assert main(["sweep", "--collect", str(out), "--no-score-maps"]) == 0
    assert f"missing tap2_k3: slurm job 4242_1, log {out / 'launcher'}/4242_1_0_log.err" in capsys.readouterr().out

    # submitted again: only the unfinished run, as a single job
    assert main(["sweep", str(config), "--out", str(out), "--launcher", "slurm"]) == 0
    assert "1 already complete" in capsys.readouterr().out
    assert "--array" not in (bin_dir / "submitted.sh").read_text()
    assert json.loads((out / "launcher" / "jobs.json").read_text())["tap2_k3"]["job_id"] == "4242"


def test_slurm_without_sbatch_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["sweep", "any.yaml", "--out", str(tmp_path / "out"), "--launcher", "slurm"]) == 2
    err = capsys.readouterr().err
    assert err == ("skipseg: error: --launcher slurm: sbatch and srun not found on PATH (not a SLURM login "
                   "node); use --launcher local, or --shard i/N on each machine\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, message", [
    (["--partition", "gpu"], "--partition: needs --launcher slurm or --launcher local"),
    (["--wait"], "--wait: needs --launcher"),
    (["--launcher", "local", "--partition", "gpu"], "--partition: applies to --launcher slurm only"),
    (["--launcher", "local", "--slurm-option", "qos=high"], "--slurm-option: applies to --launcher slurm only"),
    (["--launcher", "local", "--time", "0"], "--time 0: expected 1 or more"),
    (["--launcher", "local", "--jobs", "2", "--gpus-per-job", "64"], "needs 128 GPUs"),
    (["--launcher", "local", "--only", "noskip"], "--only: not with --launcher"),
])
def test_launcher_option_errors(tmp_path, shapes_root, capsys, extra, message):
    config = tiny_sweep(tmp_path, shapes_root)
    assert main(["sweep", str(config), "--out", str(tmp_path / "out"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_slurm_option_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", f"{_fake_slurm(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}")
    assert main(["sweep", "any.yaml", "--out", "o", "--launcher", "slurm", "--jobs", "2"]) == 2
    assert "--jobs: applies to --launcher local (on SLURM, --array-parallelism K)" in capsys.readouterr().err
    options = launch.LaunchOptions("slurm", slurm_options={"colour": "red"})
    with pytest.raises(SkipsegError, match=r"^--slurm-option: Unknown argument 'colour' .*Valid arguments: .*account"):
        launch.slurm_executor(tmp_path / "out", options)


def test_a_task_runs_its_command_with_its_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SKIPSEG_DROP", "x")
    seen = tmp_path / "env.json"
    script = (f"import json, os, sys; open({str(seen)!r}, 'w').write(json.dumps([os.environ.get(k) "
              "for k in ('A', 'SKIPSEG_DROP')])); sys.exit(3)")
    task = launch.SweepTask("r", [sys.executable, "-c", script], {"A": "1", "SKIPSEG_DROP": None})
    with pytest.raises(RuntimeError, match="r: .* exited with code 3"):
        task()
    assert json.loads(seen.read_text()) == ["1", None]
    probe = launch.tasks(tmp_path, ["probe"], "probe", {})  # probe mode: the one run, as one task
    assert probe[0].command[-2:] == ["--no-progress", "--no-report"] and "--only" not in probe[0].command


def test_failures_say_why(tmp_path):
    from types import SimpleNamespace

    def job(text: str | None) -> SimpleNamespace:
        return SimpleNamespace(exception=lambda: text and RuntimeError(text), paths=SimpleNamespace(stderr="L"))

    (tmp_path / "runs" / "done").mkdir(parents=True)
    (tmp_path / "runs" / "done" / "metrics.json").write_text("{}")
    jobs = {"done": job(None), "a": job("... exited with code 1"), "b": job("Job not requeued because: timed-out "
            "and not checkpointable."), "c": job("has not produced any output")}
    assert launch._failures(tmp_path, jobs) == ["a (exit code 1, log L)", "b (stopped at its time limit, log L)",
                                                 "c (no result, log L)"]


def test_a_run_still_training_elsewhere_is_not_submitted_again(tmp_path, shapes_root, capsys, monkeypatch):
    import signal

    from conftest import hold  # another process holding a run folder's lock, as a training does

    monkeypatch.setenv("PATH", f"{_fake_slurm(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}")
    config, out = tiny_sweep(tmp_path, shapes_root), tmp_path / "out"
    holder = hold(out / "runs" / "tap2_k3")
    try:
        assert main(["sweep", str(config), "--out", str(out), "--launcher", "slurm"]) == 0
        printed = capsys.readouterr().out
        assert "2 run(s), 0 already complete, 1 running elsewhere" in printed
        assert f"running: tap2_k3 (PID {holder.pid} on " in printed and "submitted SLURM job array 4242: 1 task" in printed
        assert list(json.loads((out / "launcher" / "jobs.json").read_text())) == ["noskip"]
        assert main(["sweep", "--collect", str(out), "--no-score-maps"]) == 0
        printed = capsys.readouterr().out
        assert f"running tap2_k3: PID {holder.pid} on " in printed and "0 configurations, 1 missing, 1 running" in printed
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert main(["sweep", str(config), "--out", str(out), "--launcher", "slurm"]) == 0  # it died: submitted now
    printed = capsys.readouterr().out
    assert "running" not in printed and "submitted SLURM job array 4242: 2 task(s)" in printed
