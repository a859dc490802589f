"""Mixed-precision training on the CPU, tiny (bf16/fp16 are emulated on AVX2): bf16 autocast and
fp16 with a GradScaler train, stop and resume bit-exactly, and the scaler's state is part of it."""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_train_config
from skipseg.core.checkpoint import load_checkpoint
from skipseg.engine.trainer import Trainer
from test_trainer import stop_at as _stop_at
from test_trainer import train_losses as _losses


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_trains_and_resumes_bit_exactly(tmp_path, shapes_root, precision, dtype):
    config = tiny_train_config(shapes_root, f"train.precision={precision}", "train.iterations=4")
    straight = Trainer(config, tmp_path / "straight", progress=False)
    assert straight.runtime.amp_dtype == dtype
    assert straight.scaler.is_enabled() == (precision == "fp16")  # loss scaling where fp16 needs it
    with straight.runtime.autocast():
        logits = straight.net(torch.randn(2, 3, 32, 32))
    assert logits.dtype == dtype  # autocast really runs the convolutions in that precision
    straight.run()
    losses = _losses(tmp_path / "straight")
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))

    Trainer(config, tmp_path / "resumed", progress=False, callbacks=(_stop_at(2),)).run()
    Trainer(config, tmp_path / "resumed", resume=True, progress=False).run()
    assert _losses(tmp_path / "resumed") == losses
    a = load_checkpoint(tmp_path / "straight", prefer="last")
    b = load_checkpoint(tmp_path / "resumed", prefer="last")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["scaler"] == b["scaler"]
    if precision == "fp16":
        assert a["scaler"]["scale"] > 0  # a live scaler's state, saved and restored
