"""/score on two real replicas sharing Redis (Debian's redis-server): the replay of the test period
through both in turn gives training's features and /predict's decisions; while Redis is down,
/score answers 503 with Retry-After, /predict is untouched and /health says so; after it comes
back, the state it held is there."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import run_module
from tests.service.conftest import start_server, stop_server
from tests.service.test_payments import replay_and_compare

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def replicas(served_tag, redis_server, earlier_payments, tmp_path_factory):
    env = {
        "FRAUD_MODEL_TAG": served_tag,
        "FRAUD_PAYMENTS__STORE": "redis",
        "FRAUD_PAYMENTS__REDIS_URL": redis_server.url,
        "FRAUD_PAYMENTS__REDIS_PREFIX": "replicas:",
    }
    filled = run_module("serving", "backfill", "--data", str(earlier_payments), env=env)
    assert filled.returncode == 0, filled.stderr[-3000:]
    servers = []
    try:
        for name in ("a", "b"):
            folder = tmp_path_factory.mktemp(f"replica_{name}")
            servers.append(start_server(".", folder / "serve.log", env=env))
            assert servers[-1].process.poll() is None, servers[-1].output()[-3000:]
        clients = [httpx.Client(base_url=server.url, timeout=30) for server in servers]
        yield servers, clients
    finally:
        for server in servers:
            stop_server(server)


def test_two_replicas_on_redis_score_as_training(replicas, served_tag):
    _, clients = replicas
    replay_and_compare(clients, served_tag)


def test_a_redis_outage_refuses_score_only_and_the_state_comes_back(
    replicas, redis_server, transactions
):
    _, (a, b) = replicas
    payment = {
        "transaction_id": "outage-1",
        "tx_datetime": "2026-07-25T00:00:00",
        "customer_id": "outage-card",
        "terminal_id": 1,
        "tx_amount": 5.0,
    }
    assert a.post("/score", json={"payments": [payment]}).status_code == 200
    redis_server.stop()
    try:
        refused = b.post("/score", json={"payments": [{**payment, "transaction_id": "outage-2"}]})
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert "payments.redis_url" in refused.json()["error"]
        assert b.get("/health").json()["payment_state"] == "degraded"
        predicted = b.post("/predict", json={"transactions": transactions[:5]})
        assert predicted.status_code == 200
    finally:
        redis_server.resume()
    later = {**payment, "transaction_id": "outage-3", "tx_datetime": "2026-07-25T00:01:00"}
    answer = b.post("/score", json={"payments": [later], "include_features": True})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["features"]["customer_nb_tx_1d"] == 1  # outage-1
    assert b.get("/health").json()["payment_state"] == "available"
