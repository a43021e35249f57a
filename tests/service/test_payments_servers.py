"""/score on real servers: two replicas sharing Redis (Debian's redis-server), through which the
replay of the test period, in turn, gives training's features and /predict's decisions; while
Redis is down, /score answers 503 with Retry-After, /predict is untouched and /health says so,
and after it comes back the state it held is there. A model trained on a table in its own column
names (ops/examples/training.toml) scores its payments in those names, as training; the
embedded state survives a restart of the server."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pandas as pd
import pytest

import model_store
from settings import load_settings
from tests.conftest import EXAMPLE_CONFIG, EXAMPLE_RENAMING, SMALL_TABLE, run_module
from tests.service.conftest import start_server, stop_server
from tests.service.test_payments import replay_and_compare
from training.data import read_table, write_table

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


def test_a_table_in_its_own_column_names_scores_as_training(tmp_path):
    settings = load_settings(EXAMPLE_CONFIG)
    table = read_table(SMALL_TABLE).rename(columns=EXAMPLE_RENAMING)
    table["merchant_risk_score"] = np.random.default_rng(0).uniform(size=len(table))
    data = write_table(table, tmp_path / "payments.parquet")
    trained = run_module(
        *("training", "--config", str(EXAMPLE_CONFIG), "train", "--data", str(data)),
        *("--trials", "1", "--runs-dir", str(tmp_path / "runs")),
        timeout=600,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    (tag,) = re.findall(r"registered (fraud_rf:\w+)", trained.stdout)
    state = tmp_path / "state.db"
    start = pd.Timestamp(model_store.get(tag).metadata["test_window"]["start"])
    before = table[table[settings.columns.timestamp] < start]
    earlier = write_table(before, tmp_path / "earlier.parquet")
    filled = run_module(
        "serving", "backfill", "--data", str(earlier), "--model", tag, "--state", str(state)
    )
    assert filled.returncode == 0, filled.stderr[-3000:]
    server = start_server(
        ".",
        tmp_path / "serve.log",
        env={"FRAUD_MODEL_TAG": tag, "FRAUD_PAYMENTS__STATE_PATH": str(state)},
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            replay_and_compare([client], tag, table, settings.columns)
    finally:
        stop_server(server)


def test_the_embedded_state_survives_a_server_restart(served_tag, tmp_path):
    env = {"FRAUD_MODEL_TAG": served_tag, "FRAUD_PAYMENTS__STATE_PATH": str(tmp_path / "s.db")}
    payment = {
        "transaction_id": "restart-1",
        "tx_datetime": "2026-07-25T00:00:00",
        "customer_id": "restart-card",
        "terminal_id": 1,
        "tx_amount": 5.0,
    }
    for attempt, moment in enumerate(("2026-07-25T00:00:00", "2026-07-25T00:01:00")):
        server = start_server(".", tmp_path / f"run-{attempt}" / "serve.log", env=env)
        try:
            answer = httpx.post(
                f"{server.url}/score",
                json={
                    "payments": [
                        {**payment, "transaction_id": f"restart-{attempt}", "tx_datetime": moment}
                    ],
                    "include_features": True,
                },
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
        finally:
            stop_server(server)
    assert answer.json()["predictions"][0]["features"]["customer_nb_tx_1d"] == 1  # restart-0
