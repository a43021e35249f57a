"""A throwaway Redis from Debian's `redis-server`, for the tests and the payment benchmark: its
data in a temporary folder (append-only file on, so a restart keeps what it held), on a free
port of 127.0.0.1, stopped and deleted at the end.

    with RedisServer.start() as server:
        url = server.url   # redis://127.0.0.1:PORT/0
        server.stop(); server.resume()   # an outage, then the same data back
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    folder: Path
    port: int
    command_prefix: list[str] = field(default_factory=list)  # e.g. taskset, to pin it
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, command_prefix: list[str] | None = None) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError(
                "redis-server not found: install Debian's 'redis-server' package (make system-deps)"
            )
        folder = Path(tempfile.mkdtemp(prefix="fraud-bento-redis-"))
        server = cls(folder, _free_port(), command_prefix or [])
        server.resume()
        return server

    def resume(self) -> None:
        """Start (or restart) the server on its port and folder; returns once it answers."""
        self.process = subprocess.Popen(
            [
                *self.command_prefix,
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--dir", str(self.folder), "--appendonly", "yes", "--save", ""),
                *("--daemonize", "no", "--protected-mode", "no"),
            ],
            stdout=(self.folder / "server.log").open("a"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not _answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server did not start: {(self.folder / 'server.log').read_text()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Shut the server down (its append-only file keeps the data for `resume`)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
