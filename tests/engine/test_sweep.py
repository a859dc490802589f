"""The sweep: expansion, config errors, shards, skipping complete runs, collecting, Table 3 inputs."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from skipseg.cli import main
from skipseg.engine import sweep
from skipseg.engine.logbook import Logbook
from skipseg.errors import SkipsegError
from skipseg.report.tables import compare_metrics, table1, table2, table3

ROOT = Path(__file__).resolve().parents[2]


def tiny_sweep(folder: Path, data: Path, extra: str = "") -> Path:
    """2 configurations (no skip, tap 2 with n = 3) on resnet18, 41-pixel crops, 2 iterations."""
    path = folder / "tiny_sweep.yaml"
    path.write_text(
        "model: {name: skipnet, backbone: resnet18, head_channels: 8, grid: 5}\n"
        f"data: {{root: {data}, crop_size: 41, workers: 0}}\n"
        "train: {batch_size: 2, iterations: 2, val_every: 2, log_every: 1, precision: fp32, channels_last: false}\n"
        f"sweep: {{taps: [none, 2], kernels: [3], score_map_count: 2{extra}}}\n")
    return path


def test_the_paper_sweep_expands_to_22_runs():
    config = sweep.load_sweep_config(ROOT / "configs" / "skip_inception_voc.yaml")
    plan = sweep.expand(config)
    assert len(plan) == 1 + 7 * 3 and plan[0] == sweep.PlannedRun("noskip", None, None, None)
    assert plan[-1] == sweep.PlannedRun("tap7_k7", "7", "Mixed_7b", 7)
    run = sweep.run_config(config, next(r for r in plan if r.name == "tap6_k5"))
    assert (run.model.options["tap"], run.model.options["kernel"], run.model.name) == ("6", 5, "skipnet")
    assert sweep.run_config(config, plan[0]).model.options["tap"] == "none"
    named = sweep.load_sweep_config(ROOT / "configs" / "skip_inception_voc.yaml",
                                    ["sweep.taps=[none, Mixed_6e, Mixed_6b]", "sweep.kernels=[7]"])
    assert [r.name for r in sweep.expand(named)] == ["noskip", "tap6_k7", "tapMixed_6b_k7"]


@pytest.mark.parametrize("override, message", [
    ("sweep.colour=red", "unknown key 'sweep.colour'"),
    ("sweep.mode=fast", "'sweep.mode' must be separate or probe"),
    ("sweep.kernels=[3, 4]", r"key 'sweep.kernels\[1\]' must be an odd integer >= 1, got 4"),
    ("sweep.kernels=[]", "must list at least one odd size"),
    ("model.name=fcn8s", "must be skipnet"),
    ("sweep.compare=[{name: x}]", r"'sweep.compare\[0\]' needs a name and a run"),
    ("sweep.kernels=3", "'sweep.kernels' must be a list"),
])
def test_sweep_config_errors(override, message):
    with pytest.raises(SkipsegError, match=message):
        sweep.load_sweep_config(ROOT / "configs" / "skip_inception_voc.yaml", [override])


def test_duplicate_taps_are_an_error():
    config = sweep.load_sweep_config(ROOT / "configs" / "skip_inception_voc.yaml", ["sweep.taps=[6, Mixed_6e]"])
    with pytest.raises(SkipsegError, match="tap6_k3 is listed twice"):
        sweep.expand(config)


def test_shards_partition_the_plan():
    plan = sweep.expand(sweep.load_sweep_config(ROOT / "configs" / "skip_inception_voc.yaml"))
    shards = [sweep.shard(plan, i, 4) for i in range(4)]
    assert sorted(r.name for s in shards for r in s) == sorted(r.name for r in plan)
    assert [len(s) for s in shards] == [6, 6, 5, 5]
    assert sweep.parse_shard("3/4") == (3, 4) and sweep.parse_shard(None) == (0, 1)
    for bad in ("4/4", "1", "a/b", "0/0"):
        with pytest.raises(SkipsegError, match="--shard"):
            sweep.parse_shard(bad)
    assert sweep.pending(plan, "probe", 1, 2) == [] and sweep.pending(plan, "probe", 0, 2) == plan


def test_sharded_sweep_trains_skips_complete_runs_and_collects(tmp_path, shapes_root, capsys):
    fcn = tmp_path / "fcn8s_run"
    fcn.mkdir()
    (fcn / "metrics.json").write_text(json.dumps({"mean_iou": 0.5, "per_class_iou": [0.9, 0.1],
                                                  "class_names": ["background", "x"]}))
    config = tiny_sweep(tmp_path, shapes_root, f", compare: [{{name: FCN-8s, run: {fcn}}}]")
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["sweep", str(config), "--out", str(a), "--shard", "0/2", "--no-progress"]) == 0
    assert "this shard is done" in capsys.readouterr().out
    assert main(["sweep", str(config), "--out", str(b), "--shard", "1/2", "--no-progress"]) == 0
    assert (a / "runs" / "noskip" / "metrics.json").is_file() and not (a / "runs" / "tap2_k3").exists()
    metrics = json.loads((b / "runs" / "tap2_k3" / "metrics.json").read_text())
    assert metrics["tap"] == "layer1.0" and metrics["kernel"] == 3 and metrics["iterations"] == 2
    assert metrics["num_images"] == 4 and len(metrics["per_class_iou"]) == 21

    stamp = (a / "runs" / "noskip" / "metrics.json").stat().st_mtime_ns
    assert main(["sweep", str(config), "--out", str(a), "--shard", "0/2", "--no-progress"]) == 0
    assert "1 already complete" in capsys.readouterr().out
    assert (a / "runs" / "noskip" / "metrics.json").stat().st_mtime_ns == stamp

    assert main(["sweep", "--collect", str(a), str(b)]) == 0
    report = a / "report"
    table1 = (report / "table1.csv").read_text().splitlines()
    assert table1[0] == "Connection,Tap,best n,mIoU,Background IoU,val cross-entropy"
    assert [row.split(",")[:3] for row in table1[1:]] == [["No connection", "top only", "—"], ["2", "layer1.0", "3"]]
    assert all("—" not in row.split(",")[3:] for row in table1[1:])
    assert (report / "table3.csv").read_text().splitlines()[2] == "FCN-8s,pixels,—,90.00,50.00"  # no run config: —
    assert sorted(p.name for p in (report / "score_maps").iterdir()) == ["noskip.png", "tap2_k3.png"]
    assert json.loads((report / "summary.json").read_text())["missing"] == []

    # one shard alone: the missing configuration shows as "—"
    assert main(["sweep", "--collect", str(a), "--report-out", str(tmp_path / "partial"), "--no-score-maps"]) == 0
    assert "—" in (tmp_path / "partial" / "table2.md").read_text().splitlines()[-1]
    # a sweep folder is bound to its config
    assert main(["sweep", str(config), "sweep.kernels=[5]", "--out", str(a)]) == 2
    assert "holds a sweep of another config" in capsys.readouterr().err


def test_jobs_run_one_process_per_run(tmp_path, shapes_root, monkeypatch):
    config = sweep.load_sweep_config(tiny_sweep(tmp_path, shapes_root))
    plan = sweep.prepare(config, tmp_path / "out")
    calls = []

    def fake_run(command, stdout, stderr, env):
        calls.append((command, env["OMP_NUM_THREADS"]))
        name = command[command.index("--only") + 1]
        if name == "noskip":  # this one "succeeds"
            (tmp_path / "out" / "runs" / name / "metrics.json").write_text("{}")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    failed = sweep.run_jobs(tmp_path / "out", plan, jobs=2)
    assert failed == ["tap2_k3"]
    assert sorted(c[0][c[0].index("--only") + 1] for c in calls) == ["noskip", "tap2_k3"]
    assert all(c[0][3:5] == ["sweep", str(tmp_path / "out" / "sweep.yaml")] for c in calls)
    assert {c[1] for c in calls} == {str(max(1, (os.cpu_count() or 1) // 2))}


def test_compare_metrics_sources(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    book = Logbook(run, tensorboard=False)
    book.log(10, "val", mean_iou=0.3)
    book.log(20, "val", mean_iou=0.4)
    assert compare_metrics(run)["mean_iou"] == 0.4 and compare_metrics(run)["background"] is None
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text(json.dumps({"mean_iou": 0.6, "per_class_iou": [0.8],
                                                           "class_names": ["background"]}))
    assert compare_metrics(run) == {"mean_iou": 0.6, "background": 0.8, "source": str(run / "eval" / "metrics.json")}
    with pytest.raises(SkipsegError, match="no metrics.json"):
        compare_metrics(tmp_path / "nothing")


def test_ties_in_miou_are_broken_by_validation_cross_entropy():
    """Heads still at the class prior tie on mIoU; the one closer to the labels is named best."""
    prior = {"mean_iou": 0.12, "class_names": ["background", "a"], "per_class_iou": [0.85, 0.0]}
    records = [
        {**prior, "label": None, "kernel": None, "tap": None, "cross_entropy": 0.70},
        {**prior, "label": "6", "kernel": 3, "tap": "Mixed_6e", "cross_entropy": 0.69},
        {**prior, "label": "6", "kernel": 5, "tap": "Mixed_6e", "cross_entropy": 0.61},
        {**prior, "label": "7", "kernel": 3, "tap": "Mixed_7b", "cross_entropy": None},  # an old run: no figure
    ]
    header, rows = table1(records, [None, "6", "7"])
    assert header[-1] == "val cross-entropy"
    assert rows[0][-1] == "0.7000"
    assert rows[1][:3] == ["7", "Mixed_7b", "3"] and rows[1][-1] == "—"
    assert rows[2][:3] == ["6", "Mixed_6e", "5"] and rows[2][-1] == "0.6100"
    assert table3(records, "skipnet", [])[1][0][0] == "skipnet (tap 6, n = 5)"
    _, grid = table2(records, [None, "6", "7"], [3, 5, 7], key="cross_entropy")  # Table 2b
    assert grid == [["No connection", "top only", "0.7000", "0.7000", "0.7000"],
                    ["7", "Mixed_7b", "—", "—", "—"], ["6", "Mixed_6e", "0.6900", "0.6100", "—"]]
