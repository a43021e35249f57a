"""The soak of `make soak` at 36 seconds (10 minutes there): zero errors, stable p99, bounded
memory and file descriptors, with its report and plot."""

from __future__ import annotations

import json

import pytest

from tests.service.conftest import run_ops_script

pytestmark = [pytest.mark.slow, pytest.mark.exclusive]


def test_short_soak(served_tag, tmp_path):
    out = tmp_path / "soak"
    result = run_ops_script(
        "soak.py",
        # six intervals: memory is compared from the end of the second (measured: +2% after it)
        "--duration",
        "36",
        "--interval",
        "6",
        # A fifth of this machine's held rate (4,250 req/s on a pinned core): rarer tail stalls
        # than make soak's 0.3 (docs/security.md), so CI does not flake. A fixed rate skips
        # measuring the capacity, which the benchmark's smoke test covers.
        "--rate",
        "800",
        "--out",
        str(out),
        tag=served_tag,
        folder=tmp_path,
        timeout=400,
    )
    print(result.stdout[-3000:])
    report = json.loads((out / "report.json").read_text())
    assert len(report["intervals"]) >= 5
    assert report["rate_rps"] > 0 and sum(i["requests"] for i in report["intervals"]) > 0
    failed = {name: check for name, check in report["checks"].items() if not check["passed"]}
    assert not failed, failed
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "soak.png").stat().st_size > 1000
