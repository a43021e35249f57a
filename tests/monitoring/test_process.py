"""The worker's monitoring process, for real: at idle priority, scored batches handed over and
logged, labels joined through it, drops counted when the hand-off is full, and a killed process
started again."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from monitoring import channel
from monitoring.channel import ProcessConfig
from monitoring.client import HAND_OFF_EVERY_S, Listeners, MonitorClient, MonitoringUnavailable
from monitoring.feedback import Label

pytestmark = pytest.mark.slow
FEATURES = ["amount", "night"]


def _config(folder, **overrides) -> ProcessConfig:
    defaults = {
        "features": FEATURES,
        "monitored": FEATURES,
        "directory": str(folder / "profiles"),
        "window_s": 3600.0,
        "drift_p_value": 0.01,
        "drift_min_effect": 0.1,
        "max_queued_rows": 100_000,
        "profile_max_rows_per_s": 500.0,
        "feedback_db": str(folder / "feedback.db"),
        "database_url": None,
        "realized_refresh_s": 60.0,
        "model_tag": "fraud_rf:test",
        "realized_window_days": 30.0,
        "prediction_retention_days": 90.0,
        "log_level": "INFO",
    }
    return ProcessConfig(**{**defaults, **overrides})


class Drops:
    def __init__(self) -> None:
        self.rows: dict[str, int] = {}

    def __call__(self, metric: str, rows: float) -> None:
        self.rows[metric] = self.rows.get(metric, 0) + rows


def _record(client: MonitorClient, request_id: str, ids: list[str], scores) -> None:
    scores = np.asarray(scores, dtype=np.float32)
    matrix = np.ones((len(scores), len(FEATURES)), dtype=np.float32)
    client.record(matrix, scores, scores >= 0.5, request_id, "fraud_rf:test", "http", ids)


async def _until(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_batches_are_logged_and_labels_join_them(tmp_path):
    async def run():
        client = MonitorClient(
            _config(tmp_path), None, max_queued_rows=100_000, listeners=Listeners()
        )
        await client.start()
        assert client.status["feedback"] and client.status["has_reference"] is False
        policies = {  # scoring first: every thread of the process, the ones its imports started too
            int(thread): os.sched_getscheduler(int(thread))
            for thread in os.listdir(f"/proc/{client.pid}/task")
        }
        _record(client, "r1", ["t1", "t2"], [0.9, 0.1])
        _record(client, "r2", ["t3"], [0.8])
        # once handed over (the hand-off task has run when this sleep ends), the rows are
        # written before a labels call is answered
        await asyncio.sleep(2 * HAND_OFF_EVERY_S)
        result = await client.submit_labels(
            [Label(True, transaction_id="t1"), Label(False, request_id="r2"), Label(True, "t9")]
        )
        realized = client.realized
        await client.close()
        return result, realized, policies

    result, realized, policies = asyncio.run(run())
    assert len(policies) > 1 and set(policies.values()) == {os.SCHED_IDLE}, policies
    assert (result.received, result.matched, result.unknown) == (3, 2, ["t9"])
    assert realized.labelled == 2 and realized.precision == 0.5  # t1 right, r2 (0.8) wrong


def test_a_full_hand_off_drops_and_counts_and_never_waits(tmp_path):
    drops = Drops()

    async def run():
        client = MonitorClient(
            _config(tmp_path), None, max_queued_rows=10, listeners=Listeners(on_count=drops)
        )
        await client.start()
        started = time.perf_counter()
        for index in range(8):  # 24 rows in one hand-off period, room for 10
            _record(client, f"r{index}", None, [0.1, 0.2, 0.3])
        elapsed = time.perf_counter() - started
        await client.close()
        return elapsed

    elapsed = asyncio.run(run())
    # whole requests: 3 fit (9 rows), 5 are dropped, neither profiled nor logged
    assert drops.rows["fraud_profiling_dropped_rows"] == 15
    assert drops.rows["fraud_prediction_log_dropped_rows"] == 15
    assert elapsed < 0.05


def test_a_killed_process_is_replaced_and_scoring_calls_never_fail(tmp_path):
    drops = Drops()

    async def run():
        client = MonitorClient(
            _config(tmp_path), None, max_queued_rows=1000, listeners=Listeners(on_count=drops)
        )
        await client.start()
        first = client.pid
        os.kill(first, signal.SIGKILL)
        await _until(lambda: not client.connected)
        _record(client, "lost", ["x"], [0.5])  # no process: dropped and counted, no error
        with pytest.raises(MonitoringUnavailable):
            await client.submit_labels([Label(True, transaction_id="x")])
        await _until(lambda: client.connected and client.status)
        _record(client, "after", ["y"], [0.7])
        await asyncio.sleep(2 * HAND_OFF_EVERY_S)  # handed over: written before the labels call
        result = await client.submit_labels([Label(True, transaction_id="y")])
        await client.close()
        return first, client.pid, client.restarts, result

    first, second, restarts, result = asyncio.run(run())
    assert second != first and restarts == 1
    assert drops.rows["fraud_prediction_log_dropped_rows"] >= 1
    assert result.matched == 1


def test_a_process_of_another_channel_version_refuses_by_name(tmp_path):
    ours, theirs = socket.socketpair()
    process = subprocess.Popen(
        [sys.executable, "-m", "monitoring.sidecar", str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        stderr=subprocess.PIPE,
        text=True,
    )
    theirs.close()
    ours.sendall(channel.frame(channel.Start(channel.VERSION - 1, _config(tmp_path), None)))
    _, stderr = process.communicate(timeout=60)
    ours.close()
    assert process.returncode != 0
    assert f"channel version {channel.VERSION - 1} from the worker" in stderr


def test_a_sampled_log_keeps_a_share_of_requests_the_same_on_retries_and_profiles_all(tmp_path):
    counts = Drops()

    async def run():
        client = MonitorClient(
            _config(tmp_path),
            None,
            max_queued_rows=100_000,
            listeners=Listeners(on_count=counts),
            log_sample=0.5,
        )
        await client.start()
        written = []
        for _attempt in range(2):  # every request retried once, same id and transactions
            for index in range(200):
                _record(client, f"r{index}", [f"t{index}-0", f"t{index}-1"], [0.9, 0.1])
            # The hand-off task has run once this sleep ends (timers fire in deadline order),
            # and a labels call is answered after the rows handed over before it are written.
            await asyncio.sleep(2 * HAND_OFF_EVERY_S)
            await client.submit_labels([])
            written.append(counts.rows.get("fraud_prediction_log_rows", 0))
        await _until(lambda: counts.rows.get("fraud_profiled_rows", 0) == 800)
        labels = [Label(True, transaction_id=f"t{index}-0") for index in range(200)]
        result = await client.submit_labels(labels)
        await client.close()
        return written, result

    written, result = asyncio.run(run())
    assert 60 <= result.matched <= 140  # about half of the requests
    assert written == [2 * result.matched] * 2  # each whole; its retry left out or skipped
    assert len(result.unknown) == 200 - result.matched
    assert "fraud_prediction_log_dropped_rows" not in counts.rows  # left out is not dropped


def test_a_challengers_scores_are_logged_and_only_served_rows_profiled(tmp_path):
    counts = Drops()

    async def run():
        client = MonitorClient(
            _config(tmp_path), None, max_queued_rows=1000, listeners=Listeners(on_count=counts)
        )
        await client.start()
        _record(client, "r1", ["t1", "t2", "t3"], [0.9, 0.1, 0.2])
        _record(client, "r2", ["t4"], [0.7])
        # the challenger's scores of both requests in one call, no feature rows: served above
        shadow = np.array([0.8, 0.3, 0.1, 0.6], dtype=np.float32)
        requests = [("r1", "http", ["t1", "t2", "t3"], 3), ("r2", "oip_http", None, 1)]
        client.record_logged_only(shadow, shadow >= 0.5, "fraud_rf:other", requests)
        await _until(lambda: counts.rows.get("fraud_profiled_rows", 0) >= 4)
        await _until(lambda: counts.rows.get("fraud_prediction_log_rows", 0) >= 8)
        await asyncio.sleep(1.2)  # nothing more comes
        await client.close()

    asyncio.run(run())
    assert counts.rows["fraud_profiled_rows"] == 4  # the champion's rows of both requests
    assert counts.rows["fraud_prediction_log_rows"] == 8
    with sqlite3.connect(tmp_path / "feedback.db") as log:
        challengers = log.execute(
            "SELECT request_id, position, transaction_id, score, decision, endpoint"
            " FROM predictions WHERE model_tag = 'fraud_rf:other' ORDER BY request_id, position"
        ).fetchall()
    assert challengers == [
        ("r1", 0, "t1", pytest.approx(0.8), 1, "http"),
        ("r1", 1, "t2", pytest.approx(0.3), 0, "http"),
        ("r1", 2, "t3", pytest.approx(0.1), 0, "http"),
        ("r2", 0, None, pytest.approx(0.6), 1, "oip_http"),
    ]
