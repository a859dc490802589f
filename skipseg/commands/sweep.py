"""`skipseg sweep CONFIG.yaml --out DIR [--jobs K] [--shard i/N] [--launcher slurm|local ...]` and
`skipseg sweep --collect DIR ...`."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="the skip-connection study: every tap x filter size, Tables 1-3, score maps",
        description="Expand a sweep config (a run config with a `sweep:` section) into one run per "
                    "configuration (no skip, every tap x n), run them (or all heads at once with "
                    "sweep.mode=probe), and write Tables 1-3 and per-class score maps to DIR/report. "
                    "Started again, complete runs are skipped and interrupted ones resumed.")
    parser.add_argument("config", nargs="?", help="sweep YAML config")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. sweep.mode=probe")
    parser.add_argument("--out", help="sweep folder (created, or continued)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process")
    parser.add_argument("--shard", metavar="i/N", help="run only the runs at plan positions i mod N (0 <= i < N)")
    parser.add_argument("--collect", nargs="+", metavar="DIR", help="merge finished sweep folders (shards) and "
                        "write the report; no training")
    parser.add_argument("--report-out", metavar="DIR", help="with --collect: where the report goes "
                        "(default: FIRST_DIR/report)")
    parser.add_argument("--no-report", action="store_true", help="do not write the report after running")
    parser.add_argument("--no-score-maps", action="store_true", help="tables only")
    parser.add_argument("--only", metavar="NAME", help=argparse.SUPPRESS)  # one run; what --jobs spawns
    launch = parser.add_argument_group(
        "launcher", "run the unfinished runs as submitit jobs: slurm submits one job array (one task per "
        "run) and returns (collect with --collect DIR, or give --wait); local runs them as --jobs K local "
        "processes. Task logs: DIR/launcher/")
    launch.add_argument("--launcher", choices=["slurm", "local"], help="submit through submitit")
    launch.add_argument("--partition", help="slurm: partition")
    launch.add_argument("--gpus-per-job", type=int, metavar="G", help="GPUs per task (slurm default 1; "
                        "local default: the launcher's own, shared; local G > 0: each of the --jobs slots its own G)")
    launch.add_argument("--cpus-per-job", type=int, metavar="C", help="CPUs per task (also its OMP_NUM_THREADS)")
    launch.add_argument("--time", type=int, metavar="MIN", help="time limit per task in minutes (slurm default "
                        "1440; local default none)")
    launch.add_argument("--array-parallelism", type=int, metavar="K", help="slurm: tasks of the array running "
                        "at once (default all)")
    launch.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                        help="any other submitit slurm parameter, e.g. account=proj, qos=high, mem=64G (repeatable)")
    launch.add_argument("--wait", action="store_true", help="slurm: wait for the array, then write the report")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def _report(dirs: list[str], out: str | None, score_maps: bool = True) -> None:
    from skipseg.report.study import collect

    from skipseg.core.lock import locked_by
    from skipseg.core.rundir import PROBE_RUN, SweepDir
    from skipseg.engine.launch import known_logs

    result = collect(dirs, out, score_maps=score_maps)
    print((result["report"] / "table1.md").read_text())
    logs = {name: entry for d in reversed(dirs) for name, entry in known_logs(d).items()}
    running = 0
    for name in result["missing"]:
        # a probe sweep's heads are all in its one run folder
        holder = next(filter(None, (locked_by(SweepDir(d).run(PROBE_RUN if result["mode"] == "probe" else name).path)
                                    for d in dirs)), None)
        job = f"{logs[name]['launcher']} job {logs[name]['job_id']}, log {logs[name]['stderr']}" if name in logs else ""
        if holder:
            running += 1
            print(f"running {name}: {holder}{f'; {job}' if job else ''}")
        elif job:  # submitted through a launcher: where its task's log is
            print(f"missing {name}: {job}")
    missing = len(result["missing"]) - running
    print(f"{len(result['found'])} configurations, {missing} missing{f', {running} running' if running else ''}; "
          f"training {result['train_seconds']:.1f} s wall, {result['train_cpu_seconds']:.1f} s CPU; "
          f"report → {result['report']}")


def run(args: argparse.Namespace) -> int:
    from skipseg.commands._common import output_folder
    from skipseg.core.lock import locked_by
    from skipseg.core.rundir import PROBE_RUN, SweepDir
    from skipseg.engine import sweep
    from skipseg.errors import SkipsegError

    if args.collect:
        _report(args.collect, args.report_out, not args.no_score_maps)
        return 0
    if not args.config or not args.out:
        raise SkipsegError("sweep needs a CONFIG.yaml and --out DIR (or --collect DIR ...)")
    if args.jobs < 1:
        raise SkipsegError(f"--jobs {args.jobs}: expected 1 or more")
    options = _launch_options(args)
    config = sweep.load_sweep_config(args.config, list(args.overrides))
    out, progress = output_folder(args.out), not args.no_progress
    if args.only:
        _, plan = sweep.read_plan(out)
        run = next((r for r in plan if r.name == args.only), None)
        if run is None:
            raise SkipsegError(f"--only {args.only}: not a run of {out}/plan.json")
        metrics = sweep.run_separate(config, run, out, progress)
        if metrics is None:
            print(f"{run.name}: stopped")
            return 1
        print(f"{run.name}: mIoU {100 * (metrics['mean_iou'] or 0):.2f}, {metrics.get('train_seconds', 0):.1f} s")
        return 0
    plan = sweep.prepare(config, out)
    index, count = sweep.parse_shard(args.shard)
    mode = config.sweep.mode
    todo = sweep.pending(plan, mode, index, count)
    names = [PROBE_RUN] if mode == "probe" and todo else [r.name for r in todo]
    left = [n for n in names if not SweepDir(out).run(n).is_complete]
    # A run another live process is training (its folder is locked) is left to it, not started twice.
    running = {n: holder for n in left if (holder := locked_by(SweepDir(out).run(n).path))}
    left = [n for n in left if n not in running]
    print(f"sweep {out}: {len(plan)} configurations, {mode} mode; this shard {index}/{count}: "
          f"{len(names)} run(s), {len(names) - len(left) - len(running)} already complete"
          f"{f', {len(running)} running elsewhere' if running else ''}")
    for name, holder in running.items():
        print(f"  running: {name} ({holder}); skipped")
    if options is not None and left:
        from skipseg.engine import launch

        if options.launcher == "local":
            launch.run_local(out, left, mode, options)
        else:
            job_id = launch.submit_slurm(out, left, mode, options)
            if not options.wait:
                print(f"submitted SLURM job array {job_id}: {len(left)} task(s), logs {out / launch.FOLDER}/; "
                      f"when it has finished: skipseg sweep --collect {out}")
                return 0
    elif mode == "probe" and left:
        if sweep.run_probe(config, plan, out, progress) is None:
            print("stopped; run the same command again to continue")
            return 130
    elif args.jobs > 1 and left:
        failed = sweep.run_jobs(out, [r for r in todo if r.name in left], args.jobs)
        if failed:
            raise SkipsegError(f"{out}: runs not completed (failed or stopped): {', '.join(failed)} "
                               "(see runs/NAME/sweep.log); run the same command again to continue")
    else:
        for position, run in enumerate(r for r in todo if r.name in left):
            print(f"[{position + 1}/{len(left)}] {run.name}")
            metrics = sweep.run_separate(config, run, out, progress)
            if metrics is None:
                print(f"stopped in {run.name}; run the same command again to continue")
                return 130
            print(f"  mIoU {100 * (metrics['mean_iou'] or 0):.2f}, {metrics.get('train_seconds', 0):.1f} s")
    every = [PROBE_RUN] if mode == "probe" else [r.name for r in plan]
    if all(SweepDir(out).run(n).is_complete for n in every):
        if not args.no_report:
            _report([str(out)], None, not args.no_score_maps)
    else:
        print(f"this shard is done; when every shard is: skipseg sweep --collect {out}")
    return 0


def _launch_options(args: argparse.Namespace):
    """The launcher's options (checked), or None without --launcher (then its options are errors)."""
    from skipseg.engine.launch import LaunchOptions
    from skipseg.errors import SkipsegError

    only_with = {"--partition": args.partition, "--gpus-per-job": args.gpus_per_job, "--cpus-per-job":
                 args.cpus_per_job, "--time": args.time, "--array-parallelism": args.array_parallelism,
                 "--slurm-option": args.slurm_option or None, "--wait": args.wait or None}
    if args.launcher is None:
        given = [flag for flag, value in only_with.items() if value is not None]
        if given:
            raise SkipsegError(f"{given[0]}: needs --launcher slurm or --launcher local")
        return None
    if args.only:
        raise SkipsegError("--only: not with --launcher")
    slurm_options = {}
    for item in args.slurm_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SkipsegError(f"--slurm-option {item}: expected KEY=VALUE, e.g. account=myproject")
        slurm_options[key.strip().replace("-", "_")] = _scalar(value.strip())
    options = LaunchOptions(args.launcher, jobs=args.jobs, partition=args.partition, gpus_per_job=args.gpus_per_job,
                            cpus_per_job=args.cpus_per_job, time_min=args.time,
                            array_parallelism=args.array_parallelism, slurm_options=slurm_options, wait=args.wait)
    options.check()
    return options


def _scalar(text: str):
    """'4' → 4, anything else as given (submitit's slurm parameters are ints or strings)."""
    return int(text) if text.lstrip("-").isdigit() else text
