"""Installable like a library: the built wheel holds everything the demo reads, and the lock pins it all."""
from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "skipseg"


def _package_data() -> list[str]:
    """Every non-Python file the package reads at run time, as wheel paths."""
    found = [p for folder in ("configs", "models", "weights") for p in (PACKAGE / folder).glob("*")
             if p.is_file() and p.suffix in {".yaml", ".pt", ".json"}]
    return sorted(str(p.relative_to(ROOT)) for p in found)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_wheel_holds_the_configs_and_shipped_files(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("skipseg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = _package_data()
    assert "skipseg/configs/fcn8s_shapes.yaml" in wanted and "skipseg/configs/skip_inception_voc.yaml" in wanted
    assert [n for n in wanted if n not in names] == []
    assert "skipseg/demo.py" in names


def test_the_demo_reads_its_configs_from_the_package():
    from skipseg.demo import CONFIGS

    assert CONFIGS.resolve().parent == PACKAGE.resolve()
    assert sorted(p.name for p in CONFIGS.glob("*_shapes.yaml"))


def test_the_lock_pins_every_package_exactly():
    lines = [line.strip() for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines()]
    pins = [line for line in lines if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^\s;]+", line) for line in pins), pins
    names = {line.split("==")[0].lower() for line in pins}
    assert {"torch", "torchvision", "numpy", "pytest", "setuptools"} <= names


def test_shipped_configs_load_by_name_from_any_folder(tmp_path, monkeypatch):
    from skipseg.config import load_config
    from skipseg.errors import SkipsegError

    monkeypatch.chdir(tmp_path)
    assert load_config("fcn8s_voc.yaml").model.name == "fcn8s"
    with pytest.raises(SkipsegError, match=r"fcn9s\.yaml: config file not found \(shipped configs.*fcn8s_voc\.yaml"):
        load_config("fcn9s.yaml")
