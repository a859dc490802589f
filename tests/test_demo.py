"""`skipseg demo --quick` writes a valid dataset and says what to run next."""
from __future__ import annotations

from skipseg.cli import main
from skipseg.data.check import check_dataset


def test_quick_demo_generates_a_clean_dataset(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "64 train + 16 val" in out and "skipseg train configs/fcn32s_shapes.yaml" in out
    assert check_dataset(tmp_path / "demo" / "data") == []
