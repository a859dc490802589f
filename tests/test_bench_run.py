"""bench.run's record and the demo_steps part: a partial or quick run never replaces the committed whole
record, and the demo-step part times the models the demo trains, as their configs train them."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is no installed package: plain `pytest` does not put the checkout on the path
    sys.path.insert(0, str(ROOT))

import bench.demo_steps as demo_steps  # noqa: E402
from bench.common import Context  # noqa: E402
from bench.run import parse_args  # noqa: E402


def test_only_the_whole_run_writes_the_record():
    results = ROOT / "bench" / "results"
    assert parse_args([]).out == results / "latest.json"
    assert parse_args(["--quick"]).out == results / "quick.json"
    assert parse_args(["--only", "loop"]).out == results / "only_loop.json"
    # the steps parts need the peaks: they are measured first and named in the file
    assert parse_args(["--only", "demo_steps"]).out == results / "only_peak_demo_steps.json"
    assert parse_args(["--only", "crf", "--out", "/tmp/x.json"]).out == Path("/tmp/x.json")


def test_demo_steps_time_the_demo_models_as_their_configs_train_them(tmp_path):
    ctx = Context(device=torch.device("cpu"), quick=False, scratch=tmp_path)
    found = {case.key: case for case in demo_steps.cases(ctx)}
    assert set(found) == {"fcn8s_shapes", "deconvnet_shapes", "skip_inception_shapes", "skip_vgg_shapes"}
    deconv, skip = found["deconvnet_shapes"], found["skip_inception_shapes"]
    assert (deconv.model, deconv.size, deconv.batch, deconv.channels_last) == ("deconvnet", 32, 32, True)
    assert (skip.model, skip.size, skip.options["width"], skip.options["tap"]) == ("skipnet", 139, 0.25, "none")


def test_the_eager_and_runtime_steps_are_both_timed_on_the_same_work():
    case = demo_steps.DemoCase("fcn8s", "fcn8s_shapes.yaml", "fcn8s", 45, 2, True,
                               {"num_classes": 3, "width": 0.0625})
    r = demo_steps.measure(case, torch.device("cpu"), rounds=1, per_round=1)
    assert r["flops"] > 0 and r["eager_s"] > 0 and r["runtime_s"] > 0
    assert len(r["times_s"]["eager"]) == len(r["times_s"]["runtime"]) == 1
