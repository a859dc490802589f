"""`skipseg sweep --launcher slurm|local`: a sweep's unfinished runs as submitit jobs.

Every task is one ordinary run of the plan, `python -m skipseg sweep DIR/sweep.yaml --out DIR --only
NAME` (probe mode: the single probe run, `... --no-report`), started in a subprocess of the submitit
task. It writes DIR/runs/NAME exactly as a sweep without a launcher does, so the resume rule (a run
is complete when its metrics.json exists) and `--collect` are unchanged. submitit keeps its pickles
and each task's logs in DIR/launcher/; DIR/launcher/jobs.json maps run names to job ids and logs.

`slurm`: one job array (`submitit.AutoExecutor`), one task per unfinished run; returns after sbatch
unless told to wait. `local`: `submitit.LocalExecutor`, at most `jobs` tasks at once, waited for.
This module imports neither torch nor the sweep engine at the top: the submitit process that
unpickles a `SweepTask` on a node only needs `subprocess`.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skipseg.core.rundir import SweepDir
from skipseg.errors import SkipsegError

LAUNCHERS = ("local", "slurm")
FOLDER = "launcher"  # DIR/launcher: submitit's folder (pickles, %j_%t_log.out/.err) and jobs.json
LOCAL_TIMEOUT_MIN = 30 * 24 * 60  # submitit's local default is 2 minutes; a local sweep has no limit
SLURM_TIMEOUT_MIN = 24 * 60
POLL_S = 0.5


@dataclass
class LaunchOptions:
    """What `--launcher` and its options asked for (`None`: not given)."""

    launcher: str
    jobs: int = 1  # local: tasks at once
    partition: str | None = None
    gpus_per_job: int | None = None  # slurm default 1; local default: every visible GPU, shared
    cpus_per_job: int | None = None
    time_min: int | None = None
    array_parallelism: int | None = None
    slurm_options: dict[str, str] = field(default_factory=dict)  # any other submitit slurm parameter
    wait: bool = False

    def check(self) -> None:
        """One-line errors for options that do not fit the launcher (before anything is written)."""
        if self.launcher not in LAUNCHERS:
            raise SkipsegError(f"--launcher {self.launcher}: expected one of {', '.join(LAUNCHERS)}")
        for flag, value in (("--gpus-per-job", self.gpus_per_job), ("--cpus-per-job", self.cpus_per_job),
                            ("--time", self.time_min), ("--array-parallelism", self.array_parallelism)):
            if value is not None and value < (0 if flag == "--gpus-per-job" else 1):
                raise SkipsegError(f"{flag} {value}: expected {'0' if flag == '--gpus-per-job' else '1'} or more")
        if self.launcher == "local":
            given = [flag for flag, value in (("--partition", self.partition), ("--array-parallelism",
                     self.array_parallelism), ("--slurm-option", self.slurm_options or None)) if value is not None]
            if given:
                raise SkipsegError(f"{given[0]}: applies to --launcher slurm only")
            _gpu_sets(self)  # enough GPUs for --jobs x --gpus-per-job
            return
        if self.jobs != 1:
            raise SkipsegError("--jobs: applies to --launcher local (on SLURM, --array-parallelism K)")
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise SkipsegError(f"--launcher slurm: {' and '.join(missing)} not found on PATH (not a SLURM "
                               "login node); use --launcher local, or --shard i/N on each machine")


class SweepTask:
    """The callable submitit pickles for one task: runs `command` and fails unless it exits with 0.

    The run is a subprocess so that a crash (or a CUDA error) ends that run only and leaves a log;
    the callable is small so that its pickle does not hold the config or the sweep engine."""

    def __init__(self, name: str, command: list[str], env: dict[str, str | None]) -> None:
        self.name, self.command, self.env = name, command, env  # env: None removes the variable

    def __call__(self) -> str:
        env = dict(os.environ)
        for key, value in self.env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        # submitit warns of the time limit with SIGUSR2 (SLURM sends it to every process of the step):
        # the run ignores it, and this process asks it to save and stop instead (below). Its own
        # session keeps a Ctrl-C of the launcher's terminal from being a second, hard stop signal.
        usr2 = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        try:
            process = subprocess.Popen(self.command, env=env, start_new_session=True)
        finally:
            signal.signal(signal.SIGUSR2, usr2)
        try:
            code = process.wait()
        except BaseException:  # timeout warning, cancel: the trainer saves last.pt on SIGTERM
            process.send_signal(signal.SIGTERM)
            process.wait()
            raise
        if code != 0:
            raise RuntimeError(f"{self.name}: `{shlex.join(self.command)}` exited with code {code}")
        return self.name


def tasks(out: Path, names: list[str], mode: str, env: dict[str, str | None]) -> list[SweepTask]:
    """One task per run name (probe mode: the one probe run), each with its own copy of `env`."""
    out = out.absolute()  # a SLURM task may start in another folder
    base = [sys.executable, "-m", "skipseg", "sweep", str(SweepDir(out).config), "--out", str(out), "--no-progress"]
    if mode == "probe":
        return [SweepTask(name, base + ["--no-report"], dict(env)) for name in names]
    return [SweepTask(name, base + ["--only", name], dict(env)) for name in names]


def _complete(out: Path, name: str) -> bool:
    return SweepDir(out).run(name).is_complete


def _record(out: Path, launcher: str, jobs: dict[str, Any]) -> None:
    """Add this submission to DIR/launcher/jobs.json (run name → job id and logs; newest wins)."""
    path = out / FOLDER / "jobs.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    for name, job in jobs.items():
        known[name] = {"launcher": launcher, "job_id": str(job.job_id), "stdout": str(job.paths.stdout),
                       "stderr": str(job.paths.stderr), "submitted": time.strftime("%Y-%m-%d %H:%M:%S")}
    tmp = path.with_name(f".jobs.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=2) + "\n")
    os.replace(tmp, path)


def known_logs(out: str | Path) -> dict[str, dict]:
    """DIR/launcher/jobs.json (what `--collect` names for runs still missing), or {}."""
    path = Path(out) / FOLDER / "jobs.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _failures(out: Path, jobs: dict[str, Any]) -> list[str]:
    """'NAME (exit code C, log PATH)' for every finished job whose run has no metrics.json."""
    failed = []
    for name, job in jobs.items():
        if _complete(out, name):
            continue
        error = job.exception()  # waits for the job; its text holds the task's traceback
        code = re.search(r"exited with code (-?\d+)", str(error or ""))
        if code:
            why = f"exit code {code.group(1)}"
        elif "timed-out" in str(error):  # submitit's time-limit warning: the run saved last.pt and stopped
            why = "stopped at its time limit"
        else:
            why = "no result"
        failed.append(f"{name} ({why}, log {job.paths.stderr})")
    return failed


def _raise_failures(out: Path, failed: list[str]) -> None:
    if failed:
        raise SkipsegError(f"{out}: {len(failed)} run(s) not completed: {'; '.join(failed)}; "
                           "run the same command again to continue")


def _gpu_sets(options: LaunchOptions) -> list[str | None]:
    """Local: the CUDA_VISIBLE_DEVICES of each of the `jobs` slots (None: the launcher's own value)."""
    if not options.gpus_per_job:
        return [None] * options.jobs if options.gpus_per_job is None else [""] * options.jobs
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d for d in visible.split(",") if d.strip()]
    else:
        import torch

        devices = [str(i) for i in range(torch.cuda.device_count())]
    need = options.jobs * options.gpus_per_job
    if need > len(devices):
        raise SkipsegError(f"--jobs {options.jobs} x --gpus-per-job {options.gpus_per_job} needs {need} GPUs, "
                           f"{len(devices)} visible")
    g = options.gpus_per_job
    return [",".join(devices[s * g:(s + 1) * g]) for s in range(options.jobs)]


def run_local(out: Path, names: list[str], mode: str, options: LaunchOptions) -> None:
    """Run the tasks through submitit's LocalExecutor, `options.jobs` at once; raise naming each
    failed run and its log."""
    import submitit

    executor = submitit.LocalExecutor(folder=out / FOLDER)
    executor.update_parameters(timeout_min=options.time_min or LOCAL_TIMEOUT_MIN)
    # --cpus-per-job, else threads split between the tasks as `--jobs` does unless OMP_NUM_THREADS is set.
    threads = str(options.cpus_per_job) if options.cpus_per_job else \
        os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // options.jobs)))
    # The local executor sets CUDA_VISIBLE_DEVICES="" when no GPUs are asked for; restore ours.
    queue = tasks(out, names, mode, {"OMP_NUM_THREADS": threads})
    slots, running, jobs = _gpu_sets(options), {}, {}
    try:
        while queue or running:
            for slot, devices in enumerate(slots):
                if slot not in running and queue:
                    task = queue.pop(0)
                    task.env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES") if devices is None \
                        else devices
                    running[slot] = task.name
                    jobs[task.name] = executor.submit(task)
                    _record(out, "local", {task.name: jobs[task.name]})
                    print(f"  started {task.name} (log {jobs[task.name].paths.stdout})", flush=True)
            for slot, name in list(running.items()):
                if jobs[name].done():
                    del running[slot]
                    print(f"  {'finished' if _complete(out, name) else 'FAILED'} {name}", flush=True)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        for name in running.values():  # each run saves last.pt and stops; started again, it resumes
            jobs[name].cancel()
        raise
    _raise_failures(out, _failures(out, jobs))


def slurm_executor(out: Path, options: LaunchOptions):
    """submitit's AutoExecutor for SLURM with the sweep's parameters (one GPU per task by default)."""
    import submitit

    try:
        executor = submitit.AutoExecutor(folder=out / FOLDER, cluster="slurm")
    except RuntimeError as exc:  # srun missing: check() says so first, but keep the message one line
        raise SkipsegError(f"--launcher slurm: {exc}") from None
    parameters: dict[str, Any] = {
        "name": f"skipseg-sweep-{out.name}", "timeout_min": options.time_min or SLURM_TIMEOUT_MIN,
        "gpus_per_node": 1 if options.gpus_per_job is None else (options.gpus_per_job or None), "nodes": 1,
        "tasks_per_node": 1, "cpus_per_task": options.cpus_per_job, "slurm_partition": options.partition,
        "slurm_array_parallelism": options.array_parallelism,
        **{f"slurm_{key}": value for key, value in options.slurm_options.items()},
    }
    try:
        executor.update_parameters(**{k: v for k, v in parameters.items() if v is not None})
    except (NameError, ValueError, TypeError, AssertionError) as exc:  # submitit lists every valid name
        raise SkipsegError(f"--slurm-option: {str(exc).splitlines()[0]}") from None
    return executor


def submit_slurm(out: Path, names: list[str], mode: str, options: LaunchOptions) -> str:
    """Submit one job array (one task per run); record it; return the array's job id."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    executor = slurm_executor(out, options)
    env = {"OMP_NUM_THREADS": str(options.cpus_per_job)} if options.cpus_per_job else {}
    try:
        submitted = executor.submit_array(tasks(out, names, mode, env))
    except (FailedJobError, FailedSubmissionError, OSError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise SkipsegError(f"--launcher slurm: sbatch failed: {detail}") from None
    jobs = dict(zip(names, submitted))
    _record(out, "slurm", jobs)
    array_id = str(submitted[0].job_id).split("_")[0]
    if options.wait:
        print(f"submitted SLURM job {array_id} ({len(names)} task(s)); waiting", flush=True)
        for name, job in jobs.items():
            job.wait()
            print(f"  {'finished' if _complete(out, name) else 'FAILED'} {name}", flush=True)
        _raise_failures(out, _failures(out, jobs))
    return array_id
