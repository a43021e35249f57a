"""The benchmark's quick path at a tiny size: it runs (/score on Redis and the production-like
side on PostgreSQL included), and writes its JSON, table and plot."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SMALL_TABLE
from tests.service.conftest import run_ops_script

pytestmark = pytest.mark.slow


def test_benchmark_smoke(served_tag, tmp_path):
    out = tmp_path / "bench"
    servers = {
        "seed",
        "bento",
        "bento_production",
        "bento_grpc",
        "bento_score_redis",
    }
    result = run_ops_script(
        "run.py",
        "--profile",
        "smoke",
        "--servers",
        ",".join(sorted(servers)),
        "--out",
        str(out),
        "--data",
        str(SMALL_TABLE),
        "--alternating-runs",
        "1",
        "--alternating-pairs",  # the monitored production side against the plain one: the
        "bento_production",  # alternating runs' code, with monitoring's counts at the held rate
        tag=served_tag,
        folder=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert report["machine"]["model"] == served_tag and report["machine"]["cores"] >= 1
    assert "pinned" in report["machine"]["pinning"] or "share" in report["machine"]["pinning"]
    assert set(report["results"]) == servers
    for by_size in report["results"].values():
        assert set(by_size) == {"1", "100"}
        for measured in by_size.values():
            assert measured["closed_loop"]["throughput_rps"] > 0
            assert measured["closed_loop"]["errors"] == 0
            assert measured["cold"] and measured["after_burst"]
            assert measured["cpu_s_per_1000_requests"] > 0 and measured["peak_rss_mb"] > 10
    tables, overhead = (out / "results.md").read_text().split("\nProduction-like traffic (")
    assert tables.count("| bento |") == 2 and tables.count("| bento_grpc |") == 2
    assert tables.count("| bento_score_redis |") == 2
    assert "× seed" in tables
    # production-like: the API key accepted (no errors above), beside the plain side
    costs = overhead.split("Monitoring's work per side")[0]  # not the stall table: 1 stall
    assert costs.count("| bento_production | 1 | ") == 1
    assert costs.count("| bento_production | 100 | ") == 1
    assert (out / "p99_vs_rate.png").stat().st_size > 1000
    counts = report["monitoring"]  # what monitoring did with each fraud-bento side's rows
    assert counts["seed"] is None and counts["bento"]["scored_rows"] > 0
    assert counts["bento"]["profiled_rows"] > 0 and counts["bento"]["logged_rows"] > 0
    assert "shadowed_rows" not in counts["bento"]  # no challenger: nothing counted as shadowed
    work, alternated = overhead.split("Monitoring's work per side")[1].split(
        "Production-like traffic:"
    )
    assert "| bento_production |" in work
    # every side's event-loop stalls, attributed, and the machine's steal over it
    assert set(report["stalls"]) == servers
    for found in report["stalls"].values():
        assert found["count"] >= 0 and found["side_stolen_ms"] >= 0
        assert found["longest_ms"] <= found["stall_ms"]
    stall_table = work.split("Event-loop stalls per side")[1]
    assert all(f"| {name} | " in stall_table for name in servers)
    # one alternating run per size of the pair asked for, and what monitoring did at the
    # monitored side's held rate
    assert set(report["alternating"]) == {"bento_production/bento"}
    assert "Monitoring on vs off:" not in alternated
    assert alternated.count("| 1 | 1 | ") == 1 and alternated.count("| 100 | 1 | ") == 1
    for rounds in report["alternating"]["bento_production/bento"].values():
        assert set(rounds[0]["held"]) == {"bento_production", "bento"}
        if rounds[0]["held"]["bento_production"]:
            assert rounds[0]["monitoring_at_held_rate"]["scored_rows"] > 0
