"""The documentation: the README is a map under 300 lines, the pages build with every link
and anchor resolved, and the settings reference, generated from the settings model, covers
every setting with what it does."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

MKDOCS = str(Path(sys.executable).parent / "mkdocs")


def _hooks():
    spec = importlib.util.spec_from_file_location(
        "reference_hooks", REPO_ROOT / "docs" / "hooks" / "reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_is_a_map_of_the_pages():
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 300
    assert "make run" in readme and "make test" in readme
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", readme))
    pages = {page.name for page in (REPO_ROOT / "docs").glob("*.md")}
    assert pages <= linked, pages - linked


def test_every_setting_says_what_it_does():
    rows = list(_hooks().settings_rows())
    assert len(rows) > 70
    assert [variable for variable, _, meaning in rows if not meaning] == []


def test_the_pages_build_with_every_link_resolved(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [MKDOCS, "build", "--strict", "--site-dir", str(site)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reference = (site / "configuration" / "index.html").read_text()
    for variable, _, _ in _hooks().settings_rows():
        assert f"<code>{variable}</code>" in reference, variable
    assert (site / "ops" / "RUNBOOK" / "index.html").is_file()
    assert 'href="serving/"' in (site / "index.html").read_text()  # the README's links
