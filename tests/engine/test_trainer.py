"""The training loop: exact resume, clean stops, non-finite losses, run folders."""
from __future__ import annotations

import os
import signal

import pytest
import torch

from conftest import tiny_train_config
from skipseg.core.checkpoint import load_checkpoint
from skipseg.engine.logbook import read_metrics
from skipseg.core.sampling import SeededView
from skipseg.data.datasets import open_dataset
from skipseg.data.augmentation import train_transforms
from skipseg.engine.trainer import Trainer
from skipseg.errors import SkipsegError


def train_losses(run_dir) -> list[float]:
    return [row["loss"] for row in read_metrics(run_dir) if row["split"] == "train"]


def stop_at(step: int):
    def callback(trainer, current, loss):
        if current == step:
            trainer.request_stop()
    return callback


def test_stopped_and_resumed_run_equals_uninterrupted_run(tmp_path, shapes_root):
    config = tiny_train_config(shapes_root)
    straight = Trainer(config, tmp_path / "straight", progress=False).run()
    assert straight["step"] == 6 and not straight["stopped"]

    first = Trainer(config, tmp_path / "resumed", progress=False, callbacks=(stop_at(3),)).run()
    assert first["stopped"] and first["step"] == 3
    assert load_checkpoint(tmp_path / "resumed", prefer="last")["step"] == 3
    # resumed with loader workers: the data order and augmentations must not depend on them
    resumed_config = tiny_train_config(shapes_root, "data.workers=2")
    second = Trainer(resumed_config, tmp_path / "resumed", resume=True, progress=False).run()
    assert second["step"] == 6

    assert train_losses(tmp_path / "resumed") == train_losses(tmp_path / "straight")
    a = load_checkpoint(tmp_path / "straight", prefer="last")["model"]
    b = load_checkpoint(tmp_path / "resumed", prefer="last")["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the losses went down: the loop really trains
    losses = train_losses(tmp_path / "straight")
    assert losses[-1] < losses[0]


def test_sigterm_saves_and_stops_cleanly(tmp_path, shapes_root):
    def terminate(trainer, step, loss):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    result = Trainer(tiny_train_config(shapes_root), tmp_path / "run", progress=False,
                     callbacks=(terminate,)).run()
    assert result["stopped"] and result["step"] == 2
    assert load_checkpoint(tmp_path / "run", prefer="last")["step"] == 2
    assert signal.getsignal(signal.SIGTERM) == before


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, shapes_root):
    config = tiny_train_config(shapes_root, "train.checkpoint_every=1")

    def poison(trainer, step, loss):
        if step == 3:
            with torch.no_grad():
                trainer.model.head.score_fr.bias.fill_(float("nan"))

    with pytest.raises(SkipsegError, match=r"loss became nan at iteration 4.*checkpoints/last.pt"):
        Trainer(config, tmp_path / "run", progress=False, callbacks=(poison,)).run()
    state = load_checkpoint(tmp_path / "run", prefer="last")
    assert state["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_run_folder_is_not_overwritten(tmp_path, shapes_root):
    config = tiny_train_config(shapes_root, "train.iterations=1")
    Trainer(config, tmp_path / "run", progress=False).run()
    with pytest.raises(SkipsegError, match="already holds a run"):
        Trainer(config, tmp_path / "run", progress=False)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.yaml", "meta.json", "metrics.csv", "checkpoints", "tensorboard"} <= files


def test_accumulation_matches_the_large_batch(tmp_path, shapes_root):
    big = tiny_train_config(shapes_root, "train.batch_size=4", "train.iterations=2", "model.dropout=0")
    small = tiny_train_config(shapes_root, "train.batch_size=2", "train.accumulate=2", "train.iterations=2",
                              "model.dropout=0")
    Trainer(big, tmp_path / "big", progress=False).run()
    Trainer(small, tmp_path / "small", progress=False).run()
    a = load_checkpoint(tmp_path / "big", prefer="last")["model"]
    b = load_checkpoint(tmp_path / "small", prefer="last")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    assert train_losses(tmp_path / "big") == pytest.approx(train_losses(tmp_path / "small"), rel=1e-5)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_are_the_augmented_items_stacked(tmp_path, shapes_root, workers):
    """The loader finishes whole batches (uint8 crops → normalised floats, int64 labels): the same
    tensors as the full augmentation of each item under its seed."""
    trainer = Trainer(tiny_train_config(shapes_root, f"data.workers={workers}"), tmp_path / "run", progress=False)
    full = SeededView(open_dataset(shapes_root, "train", transforms=train_transforms(32, scale_range=(0.5, 2.0))))
    first_batches = list(trainer._sampler())[:3]
    for (images, masks), items in zip(trainer._batches(), first_batches):
        expected = [full[item] for item in items]
        assert images.dtype == torch.float32 and masks.dtype == torch.int64
        assert torch.equal(images, torch.stack([image for image, _ in expected]))
        assert torch.equal(masks, torch.stack([mask for _, mask in expected]))
