"""What BentoML's stack gives every request, kept on the lean scoring routes: the request id on
every answer, request metrics for refusals too (a client that left is not a 500), a timeout that
includes the body, and BentoML's access log and spans when the settings turn them on."""

from __future__ import annotations

import json
import re
import socket
import time
from datetime import UTC, datetime

import httpx
import pytest

from tests.service.conftest import metric_samples, start_server, stop_server

pytestmark = pytest.mark.slow
KEY = "front-door-test-key-0123456789"
TIMEOUT_S = 2
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def door(served_tag, tmp_path_factory):
    running = start_server(
        ".",
        tmp_path_factory.mktemp("front_door") / "serve.log",
        env={
            "FRAUD_API_KEYS": KEY,
            "FRAUD_SERVING__ACCESS_LOG": "true",
            "FRAUD_SERVING__TRACE_SCORING": "true",
            "FRAUD_SERVING__REQUEST_TIMEOUT_S": str(TIMEOUT_S),
        },
    )
    assert running.process.poll() is None, running.output()[-3000:]
    yield running
    stop_server(running)


def _count(server, endpoint: str, status: int) -> float:
    samples = metric_samples(server, "bentoml_service_request_total")
    return sum(
        value
        for key, value in samples.items()
        if f'endpoint="{endpoint}"' in key and f'http_response_code="{status}"' in key
    )


def test_every_answer_carries_the_request_id(door, transactions):
    body = {"transactions": transactions[:1]}
    bad = {"transactions": [{**transactions[0], "tx_amount": -1}]}
    columns = {"columns": ["tx_amount"], "data": [[1.0]]}
    payment = {
        "transaction_id": "door-payment",
        "tx_datetime": datetime.now(UTC).isoformat(),
        "customer_id": "card-1",
        "terminal_id": "terminal-1",
        "tx_amount": 12.5,
    }
    cases = [
        ("POST", "/predict", body, AUTH, 200),
        ("POST", "/score", {"payments": [payment]}, AUTH, 200),
        ("POST", "/score", {"payments": [{**payment, "tx_amount": -1}]}, AUTH, 400),
        ("POST", "/score_columns", columns, AUTH, 400),
        ("POST", "/score", {"payments": [payment]}, {}, 401),
        ("POST", "/predict", bad, AUTH, 400),
        ("POST", "/predict_columns", columns, AUTH, 400),
        ("POST", "/predict", body, {}, 401),
        ("POST", "/v2/models/nope/infer", {"inputs": []}, AUTH, 400),
        ("GET", "/health", None, AUTH, 200),
        ("GET", "/no-such-route", None, AUTH, 404),
        ("GET", "/metrics", None, {}, 200),
    ]
    for number, (method, path, payload, headers, status) in enumerate(cases):
        given = f"door-{number}"
        response = httpx.request(
            method,
            door.url + path,
            json=payload,
            headers={**headers, "X-Request-ID": given},
            timeout=10,
        )
        assert response.status_code == status, (path, response.text)
        assert response.headers["x-request-id"] == given, path
    chosen_by_server = httpx.post(f"{door.url}/predict", json=body, headers=AUTH, timeout=10)
    assert chosen_by_server.headers["x-request-id"] == chosen_by_server.json()["request_id"]


def test_refusals_are_counted_in_the_request_metrics(door, transactions):
    body = {"transactions": transactions[:1]}
    before = {status: _count(door, "/predict", status) for status in (401, 413, 415)}
    httpx.post(f"{door.url}/predict", json=body, timeout=10)  # no key
    httpx.post(
        f"{door.url}/predict",
        content=b"x" * (9 * 1024 * 1024),
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=30,
    )
    httpx.post(
        f"{door.url}/predict",
        content=json.dumps(body),
        headers={**AUTH, "Content-Type": "text/plain"},
        timeout=10,
    )
    counted = {401: 1, 413: 1, 415: 1}

    def added() -> dict[int, float]:
        return {status: _count(door, "/predict", status) - before[status] for status in counted}

    _until(lambda: added() == counted)
    assert added() == counted


def _until(check, timeout: float = 10.0) -> None:
    """Wait for the server's side of an answer: it counts a request once it has finished with
    it, which the client may see first, and notices a client that left when its loop runs."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)


def _partial_request(server, declared: int, sent: bytes) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", server.http_port), timeout=TIMEOUT_S * 5)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    )
    connection.sendall(head.encode() + sent)
    return connection


def test_a_body_that_never_completes_is_dropped_and_counted(door):
    before = _count(door, "/predict", 408)
    started = time.monotonic()
    connection = _partial_request(door, 1000, b'{"transactions": [')
    answer = b""
    while chunk := connection.recv(4096):  # the server answers, then closes
        answer += chunk
    waited = time.monotonic() - started
    connection.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"not received within 2 s" in answer
    assert TIMEOUT_S <= waited < TIMEOUT_S + 3
    _until(lambda: _count(door, "/predict", 408) - before == 1)
    assert _count(door, "/predict", 408) - before == 1


def test_a_client_that_leaves_is_not_a_server_error(door):
    before = {status: _count(door, "/predict", status) for status in (499, 500)}
    connection = _partial_request(door, 1000, b'{"transactions": [')
    time.sleep(0.3)
    connection.close()
    _until(lambda: _count(door, "/predict", 499) > before[499])
    after = {status: _count(door, "/predict", status) for status in (499, 500)}
    assert after[499] - before[499] == 1
    assert after[500] == before[500]


def test_access_log_and_spans_cover_the_scoring_routes_when_set(door, transactions):
    given = "door-access-log"
    response = httpx.post(
        f"{door.url}/predict",
        json={"transactions": transactions[:2]},
        headers={**AUTH, "X-Request-ID": given},
        timeout=10,
    )
    assert response.status_code == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in door.output().splitlines() if "path=/predict" in line]
        if any("status=200" in line for line in lines):
            break
        time.sleep(0.2)
    access = [line for line in lines if "status=200" in line]
    assert access, door.output()[-2000:]
    # BentoML's log format names the span of the request: a span exists for the lean route
    # (without one, both ids are 0).
    trace, span = re.search(r"trace=([0-9a-f]+),span=([0-9a-f]+)", access[-1]).groups()
    assert int(trace, 16) and int(span, 16), access[-1]


def test_by_default_other_routes_have_the_access_log_and_scoring_routes_not(server, transactions):
    httpx.post(f"{server.url}/predict", json={"transactions": transactions[:1]}, timeout=10)
    httpx.get(f"{server.url}/model_info", timeout=10)
    deadline = time.monotonic() + 5
    while "path=/model_info" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "path=/model_info" in server.output()
    assert "path=/predict," not in server.output()
