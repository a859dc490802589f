"""Issue 15: a shared run folder or checkpoint never runs code; unsafe files are refused in one line."""
from __future__ import annotations

import os
import pathlib
import shlex
import shutil

import numpy as np
import pytest
import torch

from skipseg.cli import main
from skipseg.config import config_to_dict, load_config
from skipseg.core.checkpoint import load_checkpoint, safe_load, save_checkpoint
from skipseg.errors import SkipsegError
from test_engine_cli import TINY

NOTE = "skipseg loads checkpoints and weights files with torch.load(weights_only=True) and never runs code from them"


class RunsCommand:
    """Unpickled with the full pickle machinery, this runs `touch MARKER` through os.system."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class TouchesFile:
    """The same without a shell: `pathlib.Path.touch(MARKER)` (pickled as getattr(Path, 'touch'))."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, shapes_root) -> pathlib.Path:
    """A tiny trained run folder (best.pt and last.pt written by the trainer)."""
    folder = tmp_path_factory.mktemp("safety")
    config = folder / "tiny.yaml"
    config.write_text(f"model:\n  name: fcn16s\ndata:\n  root: {shapes_root}\n")
    assert main(["train", str(config), *TINY, "--out", str(folder / "run"), "--no-progress"]) == 0
    return folder / "run"


@pytest.fixture
def shared_run(tmp_path, real_run):
    """A copy of the real run whose best.pt and last.pt also carry a payload; returns (run, marker)."""
    run, marker = tmp_path / "shared", tmp_path / "MARKER"
    shutil.copytree(real_run, run)
    for name in ("best.pt", "last.pt"):
        state = safe_load(real_run / "checkpoints" / name)
        torch.save({**state, "payload": RunsCommand(marker)}, run / "checkpoints" / name)
    return run, marker


def commands(run: pathlib.Path, tmp_path: pathlib.Path, shapes_root: pathlib.Path) -> dict[str, list[str]]:
    """Every command that opens a run's checkpoint, each as a user would type it."""
    config = tmp_path / "init.yaml"
    config.write_text(f"model:\n  name: fcn16s\ndata:\n  root: {shapes_root}\n")
    images = shapes_root / "JPEGImages"
    return {
        "evaluate": ["evaluate", str(run), "--data", str(shapes_root), "--out", str(tmp_path / "e"),
                     "--no-progress", "--workers", "0"],
        "predict": ["predict", str(run), str(images), "--out", str(tmp_path / "p"), "--no-progress", "--workers", "0"],
        "export": ["export", str(run), "--onnx", str(tmp_path / "m.onnx")],
        "init_from": ["train", str(config), *TINY, f"model.init_from={run}", "--out", str(tmp_path / "t"),
                      "--no-progress"],
        "resume": ["train", "--resume", str(run), "--no-progress"],
        "report": ["report", str(run), "--out", str(tmp_path / "r"), "--samples", "1"],
    }


@pytest.mark.parametrize("command", ["evaluate", "predict", "export", "init_from", "resume", "report"])
def test_every_command_refuses_a_crafted_checkpoint(command, tmp_path, shared_run, shapes_root, capsys):
    if command == "export":
        pytest.importorskip("onnxruntime")
    run, marker = shared_run
    capsys.readouterr()
    code = main(commands(run, tmp_path, shapes_root)[command])
    err = capsys.readouterr().err.strip()
    assert not marker.exists(), "the payload ran"
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    checkpoint = "last.pt" if command == "resume" else "best.pt"
    assert err == f"skipseg: error: {run / 'checkpoints' / checkpoint}: not a safe checkpoint: it needs os.system ({NOTE})"


def test_probe_and_direct_loads_refuse_it(tmp_path, shared_run):
    from skipseg.engine.probe import probe_from_run

    run, marker = shared_run
    with pytest.raises(SkipsegError, match="best.pt: not a safe checkpoint: it needs os.system"):
        load_checkpoint(run)
    with pytest.raises(SkipsegError, match="last.pt: not a safe checkpoint: it needs os.system"):
        probe_from_run(run)
    touched = tmp_path / "touched.pt"
    torch.save({"model": {}, "config": {}, "payload": TouchesFile(marker)}, touched)
    with pytest.raises(SkipsegError, match="touched.pt: not a safe checkpoint: it needs getattr"):
        load_checkpoint(touched)
    assert not marker.exists()


def test_weights_files_and_the_hub_cache_refuse_it(tmp_path, hub):
    """`model.weights=FILE` and a file dropped where torchvision caches ImageNet weights."""
    from skipseg.models import build_model
    from skipseg.models.init import hub_cache_path

    marker = tmp_path / "MARKER"
    weights = tmp_path / "weights.pth"
    torch.save({"features.0.weight": RunsCommand(marker)}, weights)
    with pytest.raises(SkipsegError, match=r"weights.pth: not a safe state_dict: it needs os\.system"):
        build_model("fcn32s", width=0.0625, weights=str(weights))
    hub.mkdir(parents=True)
    shutil.copy(weights, hub_cache_path("VGG16_Weights.IMAGENET1K_V1"))
    with torch.device("meta"), pytest.raises(SkipsegError, match=r"vgg16-397923af.pth: not a safe weights file: "
                                                                   r"it needs os\.system .*; delete it"):
        build_model("fcn32s", pretrained="imagenet")
    assert not marker.exists()


def test_foreign_and_corrupt_files_are_one_line_errors(tmp_path):
    plain = tmp_path / "plain.pt"
    plain.write_bytes(b"not a checkpoint at all")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for path in (plain, empty):
        with pytest.raises(SkipsegError, match=f"{path.name}: not a readable checkpoint") as info:
            load_checkpoint(path)
        assert "\n" not in str(info.value)
    numpy_scalar = tmp_path / "np.pt"
    torch.save({"model": {}, "best_miou": np.float64(0.5)}, numpy_scalar)  # safe, but not plain: refused too
    with pytest.raises(SkipsegError, match=r"np.pt: not a safe checkpoint: it needs numpy\._core\.multiarray\.scalar"):
        load_checkpoint(numpy_scalar)


def test_trainer_checkpoints_load_with_weights_only(real_run):
    """What the trainer writes is tensors, dicts, lists, numbers and strings only."""
    config = load_config(real_run / "config.yaml")
    for name in ("best.pt", "last.pt"):
        state = torch.load(real_run / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert {"model", "optimizer", "scheduler", "scaler", "step", "best_miou", "config"} <= set(state)
        assert type(state["step"]) is int and type(state["best_miou"]) is float
        assert state["config"] == config_to_dict(config)
        assert all(isinstance(v, torch.Tensor) for v in state["model"].values())


def test_save_refuses_what_the_safe_loader_would_refuse(tmp_path):
    with pytest.raises(TypeError, match=r"state\['rng'\]\[1\]: numpy\.ndarray is not a tensor"):
        save_checkpoint(tmp_path / "c.pt", {"model": {}, "rng": np.random.get_state()})
    with pytest.raises(TypeError, match=r"state\['best_miou'\]: numpy\.float64"):
        save_checkpoint(tmp_path / "c.pt", {"model": {}, "best_miou": np.float64(0.5)})
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary file
    state = {"model": {"w": torch.ones(2)}, "config": {"a": [1, 2.0, "x", None, True]}, "shape": (3, 4)}
    save_checkpoint(tmp_path / "ok.pt", state)
    loaded = load_checkpoint(tmp_path / "ok.pt")
    assert loaded["config"] == state["config"] and loaded["shape"] == (3, 4)
    assert torch.equal(loaded["model"]["w"], torch.ones(2))


def test_checkpoints_get_the_mode_an_ordinary_file_gets(tmp_path):
    """Written through a private temp file (0600), a checkpoint still ends with the umask's mode, so
    the others who share a run folder can read it, as they read its metrics.csv."""
    import stat

    previous = os.umask(0o027)
    try:
        save_checkpoint(tmp_path / "run" / "last.pt", {"model": {"w": torch.zeros(2)}, "config": {}})
        (tmp_path / "run" / "metrics.csv").write_text("iteration\n")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "run" / "last.pt").stat().st_mode)
    assert mode == 0o640 == stat.S_IMODE((tmp_path / "run" / "metrics.csv").stat().st_mode)
    assert not list((tmp_path / "run").glob(".*.tmp"))  # no temp file left behind
