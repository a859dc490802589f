"""The layering of ARCHITECTURE.md holds: packages import only the layers below them (imports inside
functions included) and no package has an import cycle between its modules (import-linter)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import skipseg

tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with the standard library's TOML reader (3.11+)")

ROOT = Path(__file__).resolve().parents[1]


def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_import_contracts_are_kept():
    linter = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(linter), "--config", "pyproject.toml", "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_every_package_has_a_layer():
    """A new top-level package or module must be placed in the layers, or nothing checks it."""
    layers = next(c for c in contracts() if c["type"] == "layers")["layers"]
    placed = {name.strip() for layer in layers for name in layer.split("|")}
    package = Path(skipseg.__file__).parent
    present = {f"skipseg.{p.stem}" for p in package.iterdir()
               if (p.suffix == ".py" and p.stem not in ("__init__", "__main__")) or (p / "__init__.py").is_file()}
    assert present == placed


def test_test_folders_mirror_the_package():
    """tests/<name>/ holds the tests of skipseg/<name>/; the tests of top-level modules sit in tests/."""
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    packages = {p.name for p in Path(skipseg.__file__).parent.iterdir() if (p / "__init__.py").is_file()}
    assert folders and folders <= packages, sorted(folders - packages)
