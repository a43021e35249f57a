"""One lock: pyproject's ranges, uv.lock, the installed environment and the Bento's requirements
agree, so what the Bento and the image install is what the tests ran with."""

import re
import subprocess
import sys
import tomllib
from importlib.metadata import distributions
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from ops.test_latest import locked_versions
from tests.conftest import REPO_ROOT

UV = str(Path(sys.executable).parent / "uv")
# The files exported from the lock, each with the `uv export` options that wrote it (the Makefile's
# `lock` target): the file's own header records them.
EXPORTS = {
    "requirements/serving.txt": ["--no-default-groups"],
    "requirements/uv.txt": ["--only-group", "tools"],
}


def uv(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [UV, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_lock_agrees_with_pyprojects_ranges():
    result = uv("lock", "--check", "--offline")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", sorted(EXPORTS))
def test_the_bentos_requirements_are_the_locks_export(path):
    exported = uv("export", "--frozen", "--no-emit-project", "--no-header", *EXPORTS[path])
    assert exported.returncode == 0, exported.stderr
    lines = (REPO_ROOT / path).read_text().splitlines(keepends=True)
    header = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    assert f"uv export --frozen --no-emit-project {' '.join(EXPORTS[path])}" in lines[1]
    assert "".join(lines[header:]) == exported.stdout, f"{path} differs: run `make lock`"


def test_the_bentos_requirements_pin_every_package_with_hashes():
    text = (REPO_ROOT / "requirements" / "serving.txt").read_text()
    entries = [line for line in text.splitlines() if line[:1].isalnum()]
    pins = [re.fullmatch(r"([\w.-]+)==[\w.+!-]+ ; .* \\", line) for line in entries]
    assert entries and all(pins), entries
    assert text.count("--hash=sha256:") >= len(entries)
    names = {canonicalize_name(pin[1]) for pin in pins}
    assert {"bentoml", "scikit-learn", "grpcio", "onnxruntime"} <= names
    # the training stack and the tools stay out of the Bento
    assert not names & {"optuna", "duckdb", "treelite", "tl2cgen", "uv", "pytest"}


@pytest.mark.parametrize("tool", sorted(p.stem for p in REPO_ROOT.glob("requirements/*.in")))
def test_each_tool_venv_is_pinned_with_hashes(tool):
    """The tools with venvs of their own (ops/tool_venvs.py) install compiled requirements."""
    wanted = (REPO_ROOT / "requirements" / f"{tool}.in").read_text().split()
    text = (REPO_ROOT / "requirements" / f"{tool}.txt").read_text()
    entries = [line for line in text.splitlines() if line[:1].isalnum()]
    assert entries and all(re.fullmatch(r"[\w.-]+==[\w.+!-]+ \\", line) for line in entries)
    assert text.count("--hash=sha256:") >= len(entries)
    missing = [pin for pin in wanted if f"{pin} \\" not in entries]
    assert not missing, f"{missing} not in requirements/{tool}.txt: run `make lock`"


def test_the_test_environment_is_the_lock():
    locked = locked_versions()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["name"]
    differ = {
        name: (version, locked.get(name))
        for name, version in installed.items()
        if name not in {project, "pip", "setuptools"} and locked.get(name) != version
    }
    assert not differ, f"installed, locked: {differ}"
