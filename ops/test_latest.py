"""The fast suite against the newest releases inside pyproject's ranges (`make test-latest`).

Resolves pyproject.toml afresh (every extra and the tools group, ignoring uv.lock) into a
throwaway venv, prints what moved from the lock, then runs `pytest -m "not slow"` there. Not part
of `make test` or CI: it tries the upgrades that `make lock` would take, before they are taken.

    python ops/test_latest.py --venv runs/latest-venv [pytest arguments]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
UV = str(Path(sys.executable).parent / "uv")
# It compares the installed versions with the lock's: here they differ by design (printed above).
DESELECT = "tests/code/test_packaging.py::test_the_test_environment_is_the_lock"


def locked_versions() -> dict[str, str]:
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    return {p["name"]: p["version"] for p in lock["package"] if "version" in p}


def pins(requirements: str) -> dict[str, str]:
    entries = (line.split(";")[0].strip() for line in requirements.splitlines())
    return dict(entry.split("==", 1) for entry in entries if "==" in entry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, required=True, help="the throwaway venv (recreated)")
    args, pytest_args = parser.parse_known_args(argv)
    newest = subprocess.run(
        [UV, "pip", "compile", "pyproject.toml", "--all-extras", "--group", "tools"]
        + ["--upgrade", "--no-header", "--no-annotate", "--quiet", "--python-version", "3.11"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    latest = pins(newest)
    locked = locked_versions()
    moved = {name: version for name, version in latest.items() if locked.get(name) != version}
    print(f"test-latest: {len(moved)} of {len(latest)} packages differ from uv.lock")
    for name, version in sorted(moved.items()):
        print(f"  {name}: {locked.get(name, '(not locked)')} -> {version}")
    venv = args.venv.resolve()
    subprocess.run([UV, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    requirements = venv / "requirements.txt"
    requirements.write_text(newest)
    python = str(venv / "bin" / "python")
    install = [UV, "pip", "install", "--quiet", "--compile-bytecode", "--python", python]
    subprocess.run([*install, "-r", str(requirements)], cwd=REPO_ROOT, check=True)
    subprocess.run([*install, "--no-deps", "-e", "."], cwd=REPO_ROOT, check=True)
    suite = [python, "-m", "pytest", "-n", "2", "--dist", "loadfile", "-m", "not slow"]
    return subprocess.run(
        [*suite, "--deselect", DESELECT, *pytest_args], cwd=REPO_ROOT, check=False
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
