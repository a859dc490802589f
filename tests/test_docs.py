"""The README and docs/ point at things that exist: every relative link, every shipped config a command
names, every repository file a command or a path in backticks names."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGS = ROOT / "skipseg" / "configs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CONFIG = re.compile(r"(?<![\w/.*-])(?:configs/)?([a-z0-9_]+\.yaml)\b")
# Paths into the repository written in backticks or commands: folders and files the project ships.
REPO_PATH = re.compile(r"(?<![\w/.-])((?:skipseg|bench|tests|docs|requirements|\.ci)/[\w./-]*\w)")
# Names that are examples of what a user writes, not files of the project.
USER_FILES = {"tiny_sweep.yaml", "config.yaml", "sweep.yaml", "stages.yaml", "skip_backbone.yaml", "tiny.yaml",
              "my.yaml", "CONFIG.yaml"}


def test_the_docs_exist_and_are_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    docs = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert docs, "docs/ holds the guides"
    for name in docs:
        assert f"docs/{name}" in readme, f"README does not link docs/{name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_configs_and_paths_in_a_page_exist(page):
    text = page.read_text()
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name}: link to {target} (no such file)"
    for name in set(CONFIG.findall(text)) - USER_FILES:
        assert (CONFIGS / name).is_file(), f"{page.name}: names config {name}, not a shipped config"
    for path in set(REPO_PATH.findall(text)):
        path = path.rstrip(".")
        if any(ch in path for ch in "*{}<>") or path.endswith("/NAME"):
            continue  # a pattern, not a path
        if path.startswith("bench/results/") and "latest" not in path:
            continue  # what a quick or partial bench run writes, not a file of the repository
        assert (ROOT / path).exists() or (ROOT / path).with_suffix("").exists(), f"{page.name}: names {path}"
