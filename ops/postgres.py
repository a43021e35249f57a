"""A throwaway PostgreSQL cluster from Debian's packages, for the tests and the prediction-log
benchmark: `initdb` in a temporary folder, the server on a free port of 127.0.0.1, stopped and
deleted at the end. As root, the server runs as the `postgres` user (it refuses root).

    with Cluster.start() as cluster:
        url = cluster.url   # postgresql://fraud@127.0.0.1:PORT/fraud
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

USER = "fraud"
DATABASE = "fraud"


def binaries() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian keeps them off PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts[-3])
    if not found:
        raise FileNotFoundError(
            "PostgreSQL server not found: install Debian's 'postgresql' package (make system-deps)"
        )
    return found[-1].parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Cluster:
    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    @staticmethod
    def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run(
            [*prefix, *command], capture_output=True, text=True, check=check, timeout=120
        )

    @classmethod
    def start(cls) -> Cluster:
        # Its own folder under /tmp: a pytest tmp_path is private to root, not to `postgres`.
        folder = Path(tempfile.mkdtemp(prefix="fraud-bento-postgres-"))
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres", "postgres")
        data = folder / "data"
        bin_dir = binaries()
        cls._run(str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8")
        cluster = cls(folder, _free_port())
        cluster.resume()
        cls._run(
            str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(cluster.port),
            "-U", USER, DATABASE,
        )  # fmt: skip
        return cluster

    def resume(self) -> None:
        """Start (or restart) the server on the cluster's port; returns once it accepts."""
        self._run(
            str(binaries() / "pg_ctl"), "-D", str(self.folder / "data"), "-l",
            str(self.folder / "server.log"), "-w", "-t", "60", "-o",
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = self._run(
                str(binaries() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port),
                check=False,
            )  # fmt: skip
            if ready.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"PostgreSQL not ready:\n{self.log()[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(binaries() / "pg_ctl"), "-D", str(self.folder / "data"), "-m", mode, "-w",
            "stop", check=False,
        )  # fmt: skip

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
