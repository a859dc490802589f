"""The demo: every planned command parses, and a tiny demo runs end to end into a report."""
from __future__ import annotations

import dataclasses
import json

import pytest

from skipseg.cli import build_parser, main
from skipseg.demo import FULL, QUICK, plan, run_demo, write_configs

TINY = dataclasses.replace(QUICK, train_images=12, val_images=3, fcn_iterations=(2, 1, 1), deconv_iterations=(1, 1),
                           skip_iterations=(1, 1), proposals=3, proposal_images=2)


@pytest.mark.parametrize("settings", [FULL, QUICK])
def test_every_step_is_a_valid_command(tmp_path, settings):
    parser = build_parser()
    write_configs(tmp_path / "demo")
    steps = plan(tmp_path / "demo", settings)
    assert [s.name for s in steps][0] == "data" and steps[-1].name == "report"
    assert len({s.name for s in steps}) == len(steps)
    for step in steps:
        args, extra = parser.parse_known_args(step.argv)
        assert all("=" in item for item in extra), step.argv  # only key=value overrides left over
        config = getattr(args, "config", None)
        if config:
            assert open(config).read(), config  # the packaged configs exist


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tiny_demo_runs_end_to_end_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    report = run_demo(out, main, settings=TINY)
    assert report.is_file() and report.with_suffix(".md").is_file()
    html = report.read_text()
    for system in ("fcn32s", "fcn16s", "fcn8s", "deconvnet"):
        assert system in html
    scores = json.loads((out / "eval" / "edeconvnet_crf" / "metrics.json").read_text())
    assert scores["inference"]["crf"] and scores["inference"]["proposals"] == TINY.proposals
    assert (out / "runs" / "skip_study" / "report" / "table1.md").is_file()
    log = (out / ".demo" / "train_fcn8s.log").read_text()  # a laned step's output, kept in a file
    assert log.strip().splitlines()[-1].startswith("done:") and "it/s" not in log  # no progress bar in it
    capsys.readouterr()
    run_demo(out, main, settings=TINY)  # again: every step is skipped
    assert capsys.readouterr().out.count("done earlier") == len(plan(out, TINY))


def test_lanes_run_side_by_side_with_the_cores_split_and_a_failure_names_its_log(tmp_path):
    import time

    from skipseg.demo import Step, _cores, _run_lanes
    from skipseg.errors import SkipsegError

    done = tmp_path / ".demo"
    done.mkdir()
    version = Step("version", "print the version", ["--version"], lane="a")
    bad = Step("bad", "train a missing config", ["train", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "r")],
               lane="b")
    after = Step("after", "print it again", ["--version"], lane="b")
    with pytest.raises(SkipsegError, match=r"step 2 \(train a missing config\): exit code 2, .*missing\.yaml.*"
                                           r"\(log .*bad\.log\); fix the cause"):
        _run_lanes([(1, version), (2, bad), (3, after)], 3, done, time.perf_counter())
    assert (done / "version.done").is_file() and not (done / "after.done").exists()  # the failed lane stopped
    assert f"cpu: {max(1, _cores() // 2)} thread" in (done / "version.log").read_text()  # cores split between 2 lanes
