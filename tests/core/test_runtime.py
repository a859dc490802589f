"""Execution settings: `auto` picks what is fast on the hardware at hand."""
from __future__ import annotations

import pytest
import torch

from skipseg.core import runtime as rt
from skipseg.errors import SkipsegError


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, None)])
def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(rt, "cpu_has_native_bf16", lambda: native)
    assert rt.resolve_precision("auto", torch.device("cpu")) is expected
    runtime = rt.make_runtime("cpu", "auto")
    assert runtime.amp_dtype is expected
    assert runtime.channels_last is (expected is not None)  # NHWC only pays off with mixed precision
    assert rt.make_runtime("cpu", "auto", channels_last=True).channels_last


def test_explicit_choices_and_errors():
    cpu = torch.device("cpu")
    assert rt.resolve_precision("fp32", cpu) is None
    assert rt.resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(SkipsegError, match="train.precision"):
        rt.resolve_precision("fp8", cpu)
    with pytest.raises(SkipsegError, match="train.device: unknown device 'gpu0'"):
        rt.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(SkipsegError, match="CUDA is not available"):
            rt.resolve_device("cuda")
