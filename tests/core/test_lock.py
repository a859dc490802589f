"""One writer per run folder (`core/lock.py`): a second writer is refused in one line and writes
nothing, readers are not blocked, a killed holder leaves the folder usable, `--out FILE` is refused."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from skipseg.cli import main
from skipseg.core.lock import FolderInUse, FolderLock, locked_by

from conftest import hold

def tiny_args(root: Path, *extra: str) -> list[str]:
    """`skipseg train` overrides of a CPU-tiny FCN on `root` (constant lr: a resumed run may change
    its length and still replay the same steps)."""
    return [f"data.root={root}", "data.crop_size=32", "data.workers=0", "model.name=fcn8s", "model.num_classes=21",
            "model.width=0.0625", "train.batch_size=2", "train.lr=0.01", "train.lr_schedule=constant",
            "train.log_every=1", "train.val_every=100000", "train.precision=fp32", "train.channels_last=false", *extra]


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text("model: {name: fcn8s}\n")
    return path


def start_training(tmp_path: Path, root: Path, run: Path, *extra: str) -> subprocess.Popen:
    """`skipseg train` in its own process; returns once it has written its first checkpoint."""
    command = [sys.executable, "-m", "skipseg", "train", str(config_file(tmp_path)), "--out", str(run),
               "--no-progress", *tiny_args(root, *extra)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "last.pt").is_file():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "no checkpoint within 2 minutes"
        time.sleep(0.1)
    return process


def test_a_lock_is_exclusive_names_its_holder_and_is_given_back(tmp_path):
    folder = tmp_path / "run"
    with FolderLock(folder):
        assert locked_by(folder).startswith(f"PID {os.getpid()} on {socket.gethostname()} since ")
        with pytest.raises(FolderInUse, match=f"{folder}: in use by another process \\(PID {os.getpid()} on "):
            FolderLock(folder).acquire()
    assert locked_by(folder) is None and locked_by(tmp_path / "never") is None
    FolderLock(folder).acquire().release()  # free again


def test_a_killed_holder_leaves_the_folder_free(tmp_path):
    folder = tmp_path / "run"
    process = hold(folder)
    assert locked_by(folder).startswith(f"PID {process.pid} ")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert locked_by(folder) is None
    FolderLock(folder).acquire().release()


@pytest.mark.slow
def test_a_second_writer_is_refused_while_readers_work(tmp_path, shapes_root, capsys):
    run = tmp_path / "run"
    first = start_training(tmp_path, shapes_root, run, "train.iterations=100000", "train.checkpoint_every=2")
    try:
        before = (run / "config.yaml").read_text()
        for argv in (["train", str(config_file(tmp_path)), "--out", str(run), *tiny_args(shapes_root, "train.lr=0.5")],
                     ["train", "--resume", str(run)]):
            assert main(argv) == 2
            error = capsys.readouterr().err.strip().splitlines()
            assert len(error) == 1 and f"{run}: in use by another process (PID {first.pid} on " in error[0]
        # readers: the last complete checkpoint of the run in progress
        assert main(["evaluate", str(run), "--out", str(tmp_path / "eval"), "--no-progress", "--workers", "0"]) == 0
        assert (tmp_path / "eval" / "metrics.json").is_file()
    finally:
        first.send_signal(signal.SIGTERM)  # saves last.pt and stops
        first.wait(timeout=60)
    assert (run / "config.yaml").read_text() == before and "lr: 0.5" not in before
    steps = [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().splitlines()[1:]
             if line.split(",")[1] == "train"]
    assert steps == list(range(1, len(steps) + 1))  # one writer: no row twice, none out of order


@pytest.mark.slow
def test_exact_resume_after_kill_9_needs_no_manual_step(tmp_path, shapes_root):
    config = str(config_file(tmp_path))
    killed = tmp_path / "killed"
    process = start_training(tmp_path, shapes_root, killed, "train.iterations=100000", "train.checkpoint_every=3")
    process.send_signal(signal.SIGKILL)
    process.wait()
    step = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["step"]
    total = step + 3
    assert main(["train", "--resume", str(killed), f"train.iterations={total}", "--no-progress"]) == 0
    straight = tmp_path / "straight"
    assert main(["train", config, "--out", str(straight), "--no-progress",
                 *tiny_args(shapes_root, f"train.iterations={total}", "train.checkpoint_every=3")]) == 0
    a, b = (torch.load(r / "checkpoints" / "last.pt", weights_only=True) for r in (killed, straight))
    assert a["step"] == b["step"] == total
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])


@pytest.mark.parametrize("command", [
    ["train", "CONFIG", "--out", "FILE"], ["evaluate", "RUN", "--out", "FILE"], ["predict", "RUN", "IMAGE", "--out", "FILE"],
    ["sweep", "SWEEP", "--out", "FILE"], ["report", "RUN", "--out", "FILE"], ["demo", "--out", "FILE"],
    ["data", "shapes", "FILE"], ["pretrain", "vgg16", "--out", "FOLDER.pt"],
])
def test_an_output_that_exists_as_the_wrong_kind_is_one_line(tmp_path, capsys, command):
    file, folder = tmp_path / "results.txt", tmp_path / "weights.pt"
    file.write_text("a user's file\n")
    folder.mkdir()
    sweep_config = Path(__file__).resolve().parents[2] / "configs" / "skip_vgg_shapes.yaml"
    names = {"FILE": str(file), "FOLDER.pt": str(folder), "CONFIG": str(config_file(tmp_path)),
             "SWEEP": str(sweep_config), "RUN": str(tmp_path / "run"), "IMAGE": str(file)}
    assert main([names.get(arg, arg) for arg in command]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    expected = f"{folder}: is a folder" if "FOLDER.pt" in command else f"{file}: exists and is not a folder"
    assert len(error) == 1 and expected in error[0]
    assert file.read_text() == "a user's file\n" and not any(folder.iterdir())
