"""The online feature state against training's batch features: the same payments, replayed one
at a time with labels arriving at the delay, give the same features in either store (embedded,
and Redis from Debian's packages); retries, restarts, corrections and forgetting behave."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pandas as pd
import pytest

from model_store.payments import features_from
from serving.payments import embedded_state
from serving.payments.embedded_state import EmbeddedState
from serving.payments.payment_state import (
    DAY_NS,
    Payment,
    PaymentStore,
    StateUnavailable,
    table_payments,
)
from serving.payments.redis_state import PAYMENTS_PER_CALL, RedisState
from settings import ColumnsConfig
from tests.conftest import SMALL_TABLE
from training.data import read_table
from training.features import build_features, feature_names

COLUMNS = ColumnsConfig()
DELAY_DAYS = 7
TIME = pd.Timestamp("2026-05-01").value


@pytest.fixture(params=["embedded", "redis"])
def open_state(request, tmp_path):
    """Opens the state of one store (again: a restart), empty at the start of each test."""
    if request.param == "embedded":
        yield lambda: EmbeddedState(tmp_path / "state.db", DELAY_DAYS)
        return
    server = request.getfixturevalue("redis_server")
    prefix = f"{request.node.name}:"
    yield lambda: RedisState(server.url, prefix, DELAY_DAYS, timeout_s=5)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return (
        read_table(SMALL_TABLE)
        .sort_values([COLUMNS.timestamp, COLUMNS.transaction_id])
        .reset_index(drop=True)
    )


def replay(
    states: list[PaymentStore], payments: list[Payment], labels: list[int | None]
) -> pd.DataFrame:
    """Score each payment in time order, each label sent when it becomes known (at the delay),
    through the states in turn (replicas sharing one store)."""
    due = sorted(
        (p.time_ns + DELAY_DAYS * DAY_NS, p.transaction_id, bool(label))
        for p, label in zip(payments, labels, strict=True)
    )
    sent, rows = 0, []
    for position, payment in enumerate(payments):
        state = states[position % len(states)]
        known = sent
        while known < len(due) and due[known][0] <= payment.time_ns:
            known += 1
        state.label([(tx, label) for _, tx, label in due[sent:known]])
        sent = known
        features = features_from(state.score_and_record([payment]))
        rows.append({name: values[0] for name, values in features.items()})
    return pd.DataFrame(rows)


def test_replayed_payments_get_trainings_features(table, open_state):
    cut = table[COLUMNS.timestamp].min() + pd.Timedelta(days=80)
    earlier, later = table[table[COLUMNS.timestamp] < cut], table[table[COLUMNS.timestamp] >= cut]
    states = [open_state()]
    if isinstance(states[0], RedisState):
        states.append(open_state())  # two replicas on one Redis, taking payments in turn
    states[0].backfill(*table_payments(earlier, COLUMNS))
    online = replay(states, *table_payments(later, COLUMNS))
    built = build_features(table, COLUMNS, DELAY_DAYS)
    expected = built[built[COLUMNS.timestamp] >= cut].reset_index(drop=True)
    assert len(online) == len(expected) > 10_000
    for name in feature_names(COLUMNS):
        np.testing.assert_allclose(
            online[name].to_numpy(np.float32),
            expected[name].to_numpy(np.float32),
            rtol=1e-5,
            atol=1e-5,
            err_msg=name,
        )
    # the windows were not trivially empty
    assert (expected["terminal_risk_30d"] > 0).sum() > 100
    assert (expected["customer_terminal_new_30d"] == 0).sum() > 100


def test_a_large_request_in_any_order_gets_the_features_of_payments_one_at_a_time(
    table, redis_server
):
    """Redis scores a request in calls of PAYMENTS_PER_CALL payments: 250 payments shuffled in
    one request get the features they get one at a time in time order."""
    cut = table[COLUMNS.timestamp].min() + pd.Timedelta(days=80)
    earlier, later = table[table[COLUMNS.timestamp] < cut], table[table[COLUMNS.timestamp] >= cut]
    payments, _ = table_payments(later.head(250), COLUMNS)
    assert len(payments) > 2 * PAYMENTS_PER_CALL
    one_request, one_at_a_time = (
        RedisState(redis_server.url, prefix, DELAY_DAYS, timeout_s=5)
        for prefix in ("in-one-request:", "one-at-a-time:")
    )
    for state in (one_request, one_at_a_time):
        state.backfill(*table_payments(earlier, COLUMNS))
    shuffled = np.random.default_rng(5).permutation(len(payments))
    together = features_from(one_request.score_and_record([payments[i] for i in shuffled]))
    alone = [features_from(one_at_a_time.score_and_record([p])) for p in payments]
    for name in feature_names(COLUMNS):
        np.testing.assert_array_equal(
            together[name], [alone[i][name][0] for i in shuffled], err_msg=name
        )
    assert np.count_nonzero(together["customer_nb_tx_7d"]) > 100  # the windows held history


def _payment(tx: str, days: float, customer="c", terminal="t", amount=10.0) -> Payment:
    return Payment(tx, TIME + int(days * DAY_NS), customer, terminal, amount)


def test_a_retry_counts_once_and_a_restart_keeps_the_state(open_state):
    state = open_state()
    state.score_and_record([_payment("a", 0)])
    state.score_and_record([_payment("a", 0)])  # the same payment again
    same_instant = features_from(state.score_and_record([_payment("b", 0)]))
    assert (
        same_instant["customer_nb_tx_1d"][0] == 0
    )  # payments at one instant do not see each other
    state.close()
    reopened = open_state()
    later = features_from(reopened.score_and_record([_payment("c", 0.5)]))
    assert later["customer_nb_tx_1d"][0] == 2  # a and b, once each, after the restart
    assert later["customer_terminal_new_30d"][0] == 0


def test_labels_count_after_the_delay_and_corrections_undo_them(open_state):
    state = open_state()
    state.score_and_record([_payment("f", 0)])
    assert state.label([("f", True), ("never-seen", True)]) == 1
    inside = features_from(state.score_and_record([_payment("g", DELAY_DAYS + 0.5)]))
    assert inside["terminal_nb_tx_1d"][0] == 1 and inside["terminal_risk_1d"][0] == 1.0
    too_soon = features_from(state.score_and_record([_payment("h", DELAY_DAYS - 0.5)]))
    assert too_soon["terminal_nb_tx_30d"][0] == 0  # still inside the label delay
    state.label([("f", False)])
    corrected = features_from(state.score_and_record([_payment("i", DELAY_DAYS + 0.6)]))
    assert corrected["terminal_risk_1d"][0] == 0.0 and corrected["terminal_nb_tx_1d"][0] == 1


def test_history_past_the_horizon_is_forgotten(tmp_path, monkeypatch):
    monkeypatch.setattr(embedded_state, "MAINTAIN_EVERY_S", 0.05)
    state = EmbeddedState(tmp_path / "state.db", DELAY_DAYS)
    state.score_and_record([_payment("old", 0)])
    state.score_and_record([_payment("new", 40, customer="other", terminal="other")])
    assert state.size()["payments"] == 1
    assert state.oldest_accepted_ns() == TIME + (40 - 37) * DAY_NS

    def in_the_file() -> list[str]:
        with sqlite3.connect(tmp_path / "state.db") as db:
            return [tx for (tx,) in db.execute("SELECT transaction_id FROM payments")]

    deadline = time.monotonic() + 10
    while in_the_file() != ["new"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_the_file() == ["new"]  # deleted from the file too, off the request path
    state.close()
    reopened = EmbeddedState(tmp_path / "state.db", DELAY_DAYS)
    assert reopened.size() == {"payments": 1, "customers": 1, "terminals": 1}
    reopened.close()


def test_score_says_why_it_does_not_apply(tmp_path):
    from sklearn.ensemble import RandomForestClassifier

    import model_store
    from serving.contract.refusals import Conflict
    from serving.payments.payment_requests import payment_columns
    from serving.payments.payment_scoring import NOT_A_PAYMENT_MODEL, STORE_OFF, PaymentScoring
    from training.features import feature_schema

    features = [feature.as_dict() for feature in feature_schema(COLUMNS)]
    X = np.random.default_rng(0).uniform(size=(50, len(features))).astype(np.float32)
    forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(X, X[:, 0] > 0.5)
    for metadata, reason in (({}, NOT_A_PAYMENT_MODEL), ({"columns": {}}, STORE_OFF)):
        stored = model_store.save_model(
            forest, features=features, threshold=0.5, gate_passed=True, metadata=metadata
        )
        scoring = PaymentScoring(
            payment_columns(stored),
            stored.schema,
            None,
            None,
            max_clock_skew_s=0,
            max_rows=10,
            clock=lambda: 0,
        )
        with pytest.raises(Conflict, match="payment") as refused:
            scoring.check_applies()
        assert str(refused.value) == reason and refused.value.status == 409


def test_replicas_scoring_one_card_at_once_count_every_payment(redis_server):
    from concurrent.futures import ThreadPoolExecutor

    replicas = [RedisState(redis_server.url, "concurrent:", DELAY_DAYS, 5) for _ in range(4)]

    def score(replica: int) -> None:
        for i in range(50):
            replicas[replica].score_and_record([_payment(f"r{replica}-{i}", i / 1000)])
            replicas[replica].score_and_record([_payment(f"r{replica}-{i}", i / 1000)])  # retry

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(score, range(4)))
    after = features_from(replicas[0].score_and_record([_payment("last", 0.5)]))
    assert after["customer_nb_tx_1d"][0] == 200  # 4 x 50, each once


def test_an_outage_refuses_whole_payments_and_the_state_survives_a_redis_restart(redis_server):
    state = RedisState(redis_server.url, "outage:", DELAY_DAYS, timeout_s=1)
    state.score_and_record([_payment("before", 0)])
    redis_server.stop()
    try:
        with pytest.raises(StateUnavailable, match="payments.redis_url"):
            state.score_and_record([_payment("during", 0.1)])
        assert not state.healthy
    finally:
        redis_server.resume()
    after = features_from(state.score_and_record([_payment("after", 0.2)]))
    assert state.healthy and after["customer_nb_tx_1d"][0] == 1  # "before" only


def test_a_hot_terminal_is_counted_exactly_and_forgotten_in_time(open_state):
    """A merchant terminal with 100,000 payments inside its windows: counted exactly (each
    window is a range count, not a scan), and dropped once the horizon passes it."""
    rng = np.random.default_rng(3)
    offsets = np.sort(rng.uniform(0, 36, 100_000))  # days, within the 37-day horizon
    payments = [
        _payment(f"hot-{i}", days, customer=f"card-{i % 5_000}", terminal="hot")
        for i, days in enumerate(offsets)
    ]
    frauds = rng.uniform(size=len(payments)) < 0.01
    state = open_state()
    state.backfill(payments, [int(fraud) for fraud in frauds])
    now = 37.0
    scored = features_from(state.score_and_record([_payment("probe", now, terminal="hot")]))
    for days in (1, 7, 30):
        inside = (offsets >= now - DELAY_DAYS - days) & (offsets < now - DELAY_DAYS)
        assert scored[f"terminal_nb_tx_{days}d"][0] == inside.sum() > 0
        assert scored[f"terminal_risk_{days}d"][0] == pytest.approx(frauds[inside].mean())
    later = now + 40  # every earlier payment is past the horizon now
    fresh = features_from(state.score_and_record([_payment("probe-2", later, terminal="hot")]))
    assert fresh["terminal_nb_tx_30d"][0] == 0
    if isinstance(state, EmbeddedState):  # memory, too (Redis trims the sorted sets alike)
        assert state.size() == {"payments": 1, "customers": 1, "terminals": 1}
    after = features_from(state.score_and_record([_payment("probe-3", later + 8, terminal="hot")]))
    assert after["terminal_nb_tx_30d"][0] == 1  # only probe-2 is left in the window
