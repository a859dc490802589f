"""The main job on the embedded data: generate, train every system, evaluate, report.

The demo is a list of ordinary `skipseg` command lines (printed as they start, so each can be re-run
or changed by hand), run one after another in this process, except the trainings that do not depend
on each other: those run in two lanes side by side, each step a process of its own with half the
cores. A step that finished is recorded in OUT/.demo/ and skipped when the demo is started again; an
interrupted training resumes.

As every paper fine-tunes an ImageNet classifier, every network here starts from a shipped
shape-pretrained classifier (`pretrained: shapes`, made by `skipseg pretrain`): VGG16-BN at width
1/8 for FCN and DeconvNet, Inception-v3 at width 1/4 for the skip study, as in the papers.
CPU-sized choices (in `DemoSettings` and the `*_shapes.yaml` configs, each with its reason): the
generated data is an easier variant of the default (6 of the 20 classes, larger objects, less
clutter, 64-px images); DeconvNet takes 32-px crops in batches of 32; the skip study resizes the
images to 139 px (the paper's 559-px geometry scaled), trains the network once without a skip, then
probes all taps × n on that frozen backbone in one pass (`sweep.mode: probe`): the paper trains 22
networks.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from skipseg.config import PACKAGED_CONFIGS
from skipseg.core.rundir import RunDir
from skipseg.errors import SkipsegError

CONFIGS = PACKAGED_CONFIGS  # inside the package: the demo runs from any installed copy
SKIP_CONFIG = "skip_inception_shapes.yaml"  # the skip study on the paper's network, at width 1/4


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo: the data, each training's iterations, what is evaluated."""

    train_images: int
    val_images: int
    size: int
    classes: int
    fcn_iterations: tuple[int, int, int]  # FCN-32s, FCN-16s (from 32s), FCN-8s (from 16s)
    deconv_iterations: tuple[int, int]  # stage 1 (instance crops), stage 2 (proposal crops)
    skip_iterations: tuple[int, int]  # the no-skip backbone run, then the probe of every head
    proposals: int  # K for proposal-wise inference
    proposal_images: int  # val images scored proposal-wise (each costs K crops)
    # `--min-box`: EdgeBoxes' 1000 px² on a 500x375 VOC image, scaled to the demo's 64x64: 1000·64²/(500·375)
    proposal_min_box: int = 22
    scene: dict = field(default_factory=lambda: {"min-scale": 0.25, "max-scale": 0.9, "max-objects": 3,
                                                 "clutter": 0.5})


FULL = DemoSettings(train_images=3000, val_images=60, size=64, classes=6, fcn_iterations=(500, 1000, 3500),
                    deconv_iterations=(800, 1600), skip_iterations=(1000, 1000),
                    proposals=50, proposal_images=60)
QUICK = DemoSettings(train_images=200, val_images=20, size=64, classes=6, fcn_iterations=(100, 100, 200),
                     deconv_iterations=(50, 50), skip_iterations=(50, 50),
                     proposals=10, proposal_images=20)


TRAINED = ("fcn32s", "fcn16s", "fcn8s", "deconvnet")  # each evaluated whole-image into RUN/eval
# DeconvNet proposal-wise (top-K boxes, pixel-wise max), ± CRF, alone and with FCN-8s (EDeconvNet):
# evaluation name → (runs, extra options)
PROPOSAL_EVALS = {
    "deconvnet_proposals": (["deconvnet"], []),
    "deconvnet_proposals_crf": (["deconvnet"], ["--crf"]),
    "edeconvnet": (["deconvnet", "fcn8s"], ["--proposal-runs", "1"]),
    "edeconvnet_crf": (["deconvnet", "fcn8s"], ["--proposal-runs", "1", "--crf"]),
}


@dataclass(frozen=True)
class Step:
    """One command of the demo: its title, the `skipseg` argv, and its name in OUT/.demo/. Consecutive
    steps with a `lane` run as processes of their own, the lanes side by side (`_run_lanes`)."""

    name: str
    title: str
    argv: list[str]
    lane: str | None = None


def plan(out: Path, settings: DemoSettings, seed: int = 0) -> list[Step]:
    """The demo's commands, in order; `seed` seeds the generated data and every training."""
    s, data, runs, evals = settings, out / "data", out / "runs", out / "eval"
    # fp32 everywhere, not `auto` (bf16 where a CPU has it natively): the table is the same on every CPU
    common = [f"data.root={data}", f"model.num_classes={s.classes + 1}", f"train.seed={seed}", "train.precision=fp32"]
    fcn_crop = [f"data.crop_size={s.size}"]

    def train(name: str, config: Path, its: int | None, *extra: str, lane: str) -> Step:
        length = [f"train.iterations={its}", f"train.val_every={its}", f"train.checkpoint_every={its}"] if its else []
        return Step(f"train_{name}", f"train {name}",
                    ["train", str(config), "--out", str(runs / name), *common, *length, *extra], lane)

    def evaluate(name: str, run_names: list[str], *extra: str, out_dir: Path | None = None) -> Step:
        return Step(f"eval_{name}", f"evaluate {name}",
                    ["evaluate", *(str(runs / r) for r in run_names), "--out", str(out_dir or evals / name),
                     "--no-progress", "--precision", "fp32", *extra])

    scene = [item for key, value in s.scene.items() for item in (f"--{key}", str(value))]
    d1, d2 = s.deconv_iterations
    # 8 crops per forward: the CPU default of 2 is sized for the VOC models' 224-px crops; 64-px crops
    # need more of them to fill a forward
    proposal_args = ["--proposals", str(s.proposals), "--min-box", str(s.proposal_min_box), "--proposal-batch", "8",
                     "--proposal-cache", str(evals / "proposals"),
                     "--max-images", str(s.proposal_images)]
    return [
        Step("data", "generate the data", ["data", "shapes", str(data), "--train", str(s.train_images),
                                           "--val", str(s.val_images), "--size", str(s.size), "--seed", str(seed),
                                           "--classes", str(s.classes), *scene]),
        # Two lanes side by side, one process each: the FCN chain, and DeconvNet then the skip net.
        train("fcn32s", CONFIGS / "fcn32s_shapes.yaml", s.fcn_iterations[0], *fcn_crop, lane="fcn"),
        train("fcn16s", CONFIGS / "fcn16s_shapes.yaml", s.fcn_iterations[1], *fcn_crop,
              f"model.init_from={runs / 'fcn32s'}", lane="fcn"),
        train("fcn8s", CONFIGS / "fcn8s_shapes.yaml", s.fcn_iterations[2], *fcn_crop,
              f"model.init_from={runs / 'fcn16s'}", lane="fcn"),
        train("deconvnet", CONFIGS / "deconvnet_shapes.yaml", None, f"stages.stage1.train.iterations={d1}",
              f"stages.stage1.train.val_every={d1}", f"stages.stage2.train.iterations={d2}",
              f"stages.stage2.train.val_every={d2}", lane="deconvnet, skip net"),
        train("skip_backbone", out / "configs" / "skip_backbone.yaml", s.skip_iterations[0], "model.tap=none",
              lane="deconvnet, skip net"),
        *(evaluate(name, [name], out_dir=RunDir(runs / name).evaluation) for name in TRAINED),
        *(evaluate(name, run_names, *proposal_args, *extra) for name, (run_names, extra) in PROPOSAL_EVALS.items()),
        Step("sweep_skip", "skip study: every tap × n probed on the trained backbone",
             ["sweep", str(CONFIGS / SKIP_CONFIG), "--out", str(runs / "skip_study"), *common, "sweep.mode=probe", f"model.init_from={runs / 'skip_backbone'}",
              f"train.iterations={s.skip_iterations[1]}", f"train.val_every={s.skip_iterations[1]}",
              f"sweep.compare=[{{name: FCN-8s, run: {RunDir(runs / 'fcn8s').evaluation}}}, "
              f"{{name: DeconvNet, run: {evals / 'deconvnet_proposals'}}}, {{name: EDeconvNet, run: {evals / 'edeconvnet'}}}]"]),
        Step("report", "write the report", ["report", *report_inputs(out), "--out", str(out / "report")]),
    ]


def report_inputs(out: Path) -> list[str]:
    """What the report compares: the trained runs (curves + their evaluation), the proposal-wise and
    ensemble evaluations, and the skip study."""
    runs, evals = out / "runs", out / "eval"
    return [*(str(runs / n) for n in TRAINED), *(str(evals / n) for n in PROPOSAL_EVALS), str(runs / "skip_study")]


def write_configs(out: Path) -> None:
    """OUT/configs/skip_backbone.yaml: the skip study's CPU config without its `sweep:` section, to
    train the one network whose backbone the probe then reuses."""
    import yaml

    config = yaml.safe_load((CONFIGS / SKIP_CONFIG).read_text())
    config.pop("sweep", None)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    header = f"# written by `skipseg demo`: configs/{SKIP_CONFIG} without its sweep section\n"
    (out / "configs" / "skip_backbone.yaml").write_text(header + yaml.safe_dump(config, sort_keys=False))


def _check_same_demo(done_dir: Path, identity: dict) -> None:
    """OUT/.demo/demo.json records what the folder is a demo of; resuming it with other settings
    would mix two demos in one report."""
    marker = done_dir / "demo.json"
    identity = json.loads(json.dumps(identity))  # tuples as JSON gives them back: lists
    if marker.is_file():
        earlier = json.loads(marker.read_text())
        if earlier != identity:
            raise SkipsegError(f"{done_dir.parent}: holds a demo with seed {earlier.get('seed')} and other settings; "
                               f"use another --out (or delete it) for seed {identity['seed']}")
    else:
        marker.write_text(json.dumps(identity, indent=2) + "\n")


def _resumable(step: Step) -> list[str]:
    """A training step whose run folder already holds a checkpoint continues it instead."""
    if step.argv[0] == "train":
        run_dir = RunDir(step.argv[step.argv.index("--out") + 1])
        if run_dir.last.is_file() or run_dir.stages_file.is_file():
            return ["train", "--resume", str(run_dir)]
    return step.argv


def run_demo(out: str | Path, run_command: Callable[[list[str]], int], quick: bool = False,
             settings: DemoSettings | None = None, seed: int = 0) -> Path:
    """Run every step not yet done (`settings` default: FULL, or QUICK) with `seed`; returns the
    report's path. A folder made with another seed or settings is refused, not mixed.
    `run_command(argv)` runs one `skipseg` command line and returns its exit code: the CLI's own
    entry point (`skipseg.cli.main`), which the CLI hands to its commands as `args.run_command`."""
    out = Path(out)
    settings = settings or (QUICK if quick else FULL)
    if not CONFIGS.is_dir():
        raise SkipsegError(f"{CONFIGS}: the packaged configs folder is missing; reinstall skipseg")
    done_dir = out / ".demo"
    done_dir.mkdir(parents=True, exist_ok=True)
    write_configs(out)
    _check_same_demo(done_dir, {"seed": seed, "settings": dataclasses.asdict(settings)})
    steps = plan(out, settings, seed)
    numbered = list(enumerate(steps, start=1))
    start = time.perf_counter()
    while numbered:
        if numbered[0][1].lane is not None:  # a block of laned steps, run side by side
            block = list(itertools.takewhile(lambda item: item[1].lane is not None, numbered))
            _run_lanes(block, len(steps), done_dir, start)
            numbered = numbered[len(block):]
            continue
        (number, step), numbered = numbered[0], numbered[1:]
        header = f"[{number}/{len(steps)}] {step.title}"
        if _done_earlier(done_dir, step, header):
            continue
        argv = _resumable(step)
        print(f"\n{header}  ({time.perf_counter() - start:.0f} s)\n  $ skipseg {shlex.join(argv)}", flush=True)
        began = time.perf_counter()
        code = run_command(argv)
        if code != 0:
            raise _failed(done_dir, f"step {number} ({step.title}) failed with exit code {code}")
        _mark_done(done_dir, step, began)
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return out / "report" / "report.html"


def _done_earlier(done_dir: Path, step: Step, header: str) -> bool:
    marker = done_dir / f"{step.name}.done"
    if marker.is_file():
        print(f"{header}: done earlier ({marker.read_text().strip()})", flush=True)
    return marker.is_file()


def _mark_done(done_dir: Path, step: Step, began: float) -> None:
    """Record a finished step (and how long it took) so that a restarted demo skips it."""
    (done_dir / f"{step.name}.done").write_text(f"{time.perf_counter() - began:.1f} s\n")


def _failed(done_dir: Path, what: str) -> SkipsegError:
    return SkipsegError(f"demo {what}; fix the cause and run the demo again: finished steps are kept in {done_dir}")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_lanes(block: list[tuple[int, Step]], total: int, done_dir: Path, start: float) -> None:
    """Run each lane's steps in order, every step a `skipseg` process of its own writing to
    OUT/.demo/NAME.log, the lanes side by side with the cores split between them. A small network
    keeps two cores busy in two single-thread processes far better than in one process with two
    threads (docs/performance.md); a failed step stops its lane, the other lanes finish theirs."""
    lanes: dict[str, list[tuple[int, Step]]] = {}
    for number, step in block:
        lanes.setdefault(step.lane, []).append((number, step))
    threads = max(1, _cores() // len(lanes))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    failed: list[str] = []

    def run_lane(items: list[tuple[int, Step]]) -> None:
        for number, step in items:
            header = f"[{number}/{total}] {step.title}"
            if _done_earlier(done_dir, step, header):
                continue
            argv, log = _resumable(step), done_dir / f"{step.name}.log"
            if argv[0] == "train":  # its output goes to a file: no progress bar in it
                argv = ["train", "--no-progress", *argv[1:]]
            print(f"\n{header}  ({time.perf_counter() - start:.0f} s; lane '{step.lane}', {threads} thread"
                  f"{'s' * (threads > 1)}, output in {log})\n  $ skipseg {shlex.join(argv)}", flush=True)
            began = time.perf_counter()
            with log.open("w") as handle:
                code = subprocess.run([sys.executable, "-m", "skipseg", *argv], stdout=handle,
                                      stderr=subprocess.STDOUT, env=env).returncode
            lines = log.read_text().strip().splitlines() or [""]
            if code != 0:
                failed.append(f"step {number} ({step.title}): exit code {code}, {lines[-1]} (log {log})")
                return
            _mark_done(done_dir, step, began)
            print(f"{header}: {lines[-1]} ({time.perf_counter() - began:.0f} s)", flush=True)

    with ThreadPoolExecutor(len(lanes)) as pool:
        list(pool.map(run_lane, lanes.values()))
    if failed:
        raise _failed(done_dir, "; ".join(failed))
