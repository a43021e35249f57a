"""Virtual environments for the tools that cannot share the project's: pip-audit (its
platformdirs>=4 cannot be installed beside whylogs 1.6.4) and the standard OIP clients (KServe's
SDK and MLServer each register the `inference` protos). Each is made exactly what
requirements/NAME.txt pins, with hashes; `make lock` compiles that file from requirements/NAME.in,
so a release on the registry changes nothing until the lock is refreshed."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements"
UV = Path(sys.executable).parent / "uv"  # the project's own (its `tools` group)


def tool_python(name: str, folder: Path) -> Path:
    """The venv's python, its packages synced to requirements/NAME.txt (uv: seconds where pip
    took a minute; nothing to do when they already are)."""
    python = folder / "bin" / "python"
    if not python.exists():
        venv.create(folder, clear=True)
    subprocess.run(
        [str(UV), "pip", "sync", "--quiet", "--require-hashes", "--python", str(python)]
        + [str(REQUIREMENTS / f"{name}.txt")],
        check=True,
        timeout=900,
    )
    return python
