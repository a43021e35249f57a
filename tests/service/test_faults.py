"""Faults on a real server: a killed worker comes back and no request is silently lost; a killed
monitoring process comes back and no request fails; an unwritable monitoring directory leaves
scoring untouched."""

from __future__ import annotations

import threading
import time

import httpx
import psutil
import pytest

from tests.service.conftest import start_server, stop_server

pytestmark = pytest.mark.slow
RECOVERY_BOUND_S = 60


def _worker(server) -> psutil.Process:
    (worker,) = [
        p
        for p in psutil.Process(server.process.pid).children(recursive=True)
        if "_bentoml_impl.worker.service" in " ".join(p.cmdline())
    ]
    return worker


def test_a_killed_worker_is_replaced_and_every_request_is_answered(
    served_tag, transactions, tmp_path
):
    server = start_server(".", tmp_path / "serve.log")
    outcomes = {"ok": 0, "server_error": 0, "connection_error": 0, "other": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                response = httpx.post(
                    f"{server.url}/predict", json={"transactions": transactions[:5]}, timeout=20
                )
                kind = (
                    "ok"
                    if response.status_code == 200
                    else ("server_error" if response.status_code >= 500 else "other")
                )
            except httpx.TransportError:  # refused, reset, or timed out: never a silent loss
                kind = "connection_error"
            with lock:
                outcomes[kind] += 1
            if kind != "ok":
                time.sleep(0.05)

    clients = [threading.Thread(target=client) for _ in range(4)]
    try:
        for thread in clients:
            thread.start()
        time.sleep(2)
        victim = _worker(server)
        victim.kill()
        killed = time.monotonic()
        before = dict(outcomes)
        recovered = None
        while time.monotonic() - killed < RECOVERY_BOUND_S:
            try:
                answer = httpx.post(
                    f"{server.url}/predict", json={"transactions": transactions[:1]}, timeout=5
                )
                if answer.status_code == 200 and _worker(server).pid != victim.pid:
                    recovered = time.monotonic() - killed
                    break
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.2)
        time.sleep(1)
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)
        stop_server(server)
    print(f"worker SIGKILL: recovered in {recovered} s; outcomes {outcomes}; before {before}")
    assert recovered is not None, f"no new worker answered within {RECOVERY_BOUND_S} s"
    assert outcomes["other"] == 0, outcomes
    assert outcomes["ok"] > before["ok"]  # traffic flows again after the restart
    assert not any(thread.is_alive() for thread in clients)  # every request returned


def test_an_unwritable_monitoring_directory_does_not_affect_scoring(
    served_tag, transactions, tmp_path
):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the monitoring directory should be")
    server = start_server(
        ".",
        tmp_path / "serve.log",
        env={
            "FRAUD_MONITORING__DIRECTORY": str(blocker / "monitoring"),
            "FRAUD_MONITORING__WINDOW_S": "1",
        },
    )
    try:
        assert server.process.poll() is None, server.output()[-3000:]
        for _ in range(5):
            response = httpx.post(
                f"{server.url}/predict", json={"transactions": transactions[:20]}, timeout=30
            )
            assert response.status_code == 200, response.text
            time.sleep(0.5)
        time.sleep(2.5)  # a window closes and fails to be written
        health = httpx.get(f"{server.url}/health").json()
        assert health["status"] == "healthy"
        assert health["profiling"] == "unavailable" and health["feedback"] == "unavailable"
        assert health["payment_state"] == "unavailable"
        payment = {"transaction_id": "p", "tx_datetime": "2026-07-01T00:00:00"}
        payment |= {"customer_id": 1, "terminal_id": 1, "tx_amount": 1.0}
        refused = httpx.post(f"{server.url}/score", json={"payments": [payment]})
        assert refused.status_code == 503 and "payments.state_path" in refused.text
        feedback = httpx.post(
            f"{server.url}/feedback",
            json={"labels": [{"transaction_id": "x", "is_fraud": True}]},
        )
        assert feedback.status_code == 503
        assert httpx.get(f"{server.url}/stats").json()["realized"] is None
    finally:
        stop_server(server)
    assert "feedback unavailable" in server.output()
    assert "profiling unavailable" in server.output()


def test_a_killed_monitoring_process_is_replaced_and_scoring_never_fails(
    served_tag, transactions, tmp_path
):
    server = start_server(".", tmp_path / "serve.log")
    statuses: list[int] = []
    try:
        first = httpx.get(f"{server.url}/health").json()["monitoring_process"]
        assert first["restarts"] == 0
        psutil.Process(first["pid"]).kill()
        deadline = time.monotonic() + RECOVERY_BOUND_S
        while time.monotonic() < deadline:
            response = httpx.post(
                f"{server.url}/predict", json={"transactions": transactions[:5]}, timeout=20
            )
            statuses.append(response.status_code)
            health = httpx.get(f"{server.url}/health").json()
            if health["monitoring_process"]["restarts"] == 1 and health["feedback"] == "available":
                break
            time.sleep(0.1)
        assert health["monitoring_process"]["pid"] != first["pid"], health
        labelled = transactions[10]
        response = httpx.post(
            f"{server.url}/predict",
            json={"transactions": [labelled]},
            headers={"X-Request-ID": "after-restart"},
            timeout=20,
        )
        statuses.append(response.status_code)
        time.sleep(1.5)  # the hand-off and the log's next write
        feedback = httpx.post(
            f"{server.url}/feedback",
            json={"labels": [{"request_id": "after-restart", "is_fraud": False}]},
            timeout=20,
        )
        assert feedback.status_code == 200 and feedback.json()["matched"] == 1, feedback.text
    finally:
        stop_server(server)
    assert statuses and set(statuses) == {200}, statuses
    assert "monitoring process stopped; starting it again" in server.output()
