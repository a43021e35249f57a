"""Faults on a real server: a killed worker comes back and no request is silently lost; an
unwritable monitoring directory leaves scoring untouched."""

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
