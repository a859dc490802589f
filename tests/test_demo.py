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
    capsys.readouterr()
    run_demo(out, main, settings=TINY)  # again: every step is skipped
    assert capsys.readouterr().out.count("done earlier") == len(plan(out, TINY))
