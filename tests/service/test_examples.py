"""The documented example scripts against a real server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, SMALL_TABLE_SIMULATION

pytestmark = pytest.mark.slow
SEND_TRAFFIC = REPO_ROOT / "ops" / "examples" / "send_traffic.py"


def _send(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SEND_TRAFFIC), "--url", server.url, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_send_traffic_simulates_the_size_the_model_was_trained_on(server):
    size = SMALL_TABLE_SIMULATION
    sent = _send(
        server,
        *("--customers", str(size["customers"]), "--terminals", str(size["terminals"])),
        *("--days", "100", "--from-day", "95", "--rows", "150"),
    )
    assert sent.returncode == 0, sent.stderr[-2000:]
    assert "sent 150 transactions from day 95 of a 100-day simulation of 200 customers" in (
        sent.stdout
    )
    outside = _send(server, "--days", "100", "--from-day", "120")
    assert outside.returncode == 2 and "--from-day 120 is outside the 100 simulated days" in (
        outside.stderr
    )
