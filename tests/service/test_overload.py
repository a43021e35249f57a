"""Overload on the real server: a burst far past what one worker scores is partly refused at once
(503 with Retry-After and the request id, counted, summarised in one log line a second), the
rest answered; right after it, requests are taken on again, none refused."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.service.conftest import metric_samples, start_server, stop_server

pytestmark = pytest.mark.slow
BURST = 240  # requests at once
ROWS = 1000  # each: the most one request may carry
CONNECTIONS = 120


@pytest.fixture(scope="module")
def worker(served_tag, tmp_path_factory):
    running = start_server(".", tmp_path_factory.mktemp("overload") / "serve.log")
    assert running.process.poll() is None, running.output()[-3000:]
    yield running
    stop_server(running)


def _overloaded(server) -> float:
    samples = metric_samples(server, "fraud_requests_total")
    return sum(v for k, v in samples.items() if 'outcome="overloaded"' in k)


async def _burst(url: str, body: dict) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        return await asyncio.gather(
            *(
                client.post(url, json=body, headers={"X-Request-ID": f"burst-{i}"})
                for i in range(BURST)
            )
        )


def test_a_burst_is_partly_refused_at_once_and_the_next_requests_are_taken_on(worker, transactions):
    body = {"transactions": [transactions[i % len(transactions)] for i in range(ROWS)]}
    before = _overloaded(worker)
    answers = asyncio.run(_burst(f"{worker.url}/predict", body))
    statuses = [answer.status_code for answer in answers]
    refused = [answer for answer in answers if answer.status_code == 503]
    assert set(statuses) <= {200, 503}, statuses
    assert refused and statuses.count(200), statuses  # refused the excess, served the rest
    for answer in refused:
        assert answer.headers["retry-after"] == "1"
        assert answer.headers["x-request-id"].startswith("burst-")
        assert "admission_target_ms" in answer.json()["error"]
    # Right after the burst nothing is left queued: each request is taken on.
    with httpx.Client(timeout=30) as client:
        after = [
            client.post(f"{worker.url}/predict", json={"transactions": transactions[:1]})
            for _ in range(20)
        ]
    assert [answer.status_code for answer in after] == [200] * 20
    assert _overloaded(worker) - before == len(refused)
    # One summary line a second, not a line a refusal.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [line for line in worker.output().splitlines() if "overloaded: refused" in line]
        if sum(_refused_in(line) for line in lines) >= len(refused):
            break
        time.sleep(0.2)
    assert sum(_refused_in(line) for line in lines) == len(refused)
    assert len(lines) < len(refused)


def _refused_in(line: str) -> int:
    return int(line.split("overloaded: refused ", 1)[1].split(" ", 1)[0])
