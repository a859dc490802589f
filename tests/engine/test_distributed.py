"""torchrun with 2 gloo processes on CPU equals one process with the same global batch."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from skipseg.core.checkpoint import load_checkpoint
from skipseg.engine.logbook import read_metrics

ARGS = ["model.width=0.0625", "model.dropout=0", "data.crop_size=32", "data.workers=0", "train.iterations=4",
        "train.val_every=4", "train.log_every=1", "train.precision=fp32", "train.lr=0.05", "--no-progress"]


def run_skipseg(args: list[str], launcher: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *launcher, "-m", "skipseg", "train", *args],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_gloo_ranks_match_one_process(tmp_path, shapes_root):
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  name: fcn8s\ndata:\n  root: {shapes_root}\n")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_skipseg([str(config), *ARGS, "train.batch_size=4", "--out", str(single)], [])
    run_skipseg([str(config), *ARGS, "train.batch_size=2", "--out", str(ddp)],
                ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"])

    a = load_checkpoint(single, prefer="last")["model"]
    b = load_checkpoint(ddp, prefer="last")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    rows_a, rows_b = read_metrics(single), read_metrics(ddp)
    assert [r["split"] for r in rows_a] == [r["split"] for r in rows_b]  # rank 0 alone wrote the log
    for ra, rb in zip(rows_a, rows_b):
        for key in ("loss", "mean_iou", "pixel_acc"):
            if ra[key] is not None:
                assert rb[key] == pytest.approx(ra[key], rel=1e-4), (ra, rb)
    assert not list(ddp.glob("**/*.tmp"))
