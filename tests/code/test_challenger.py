"""A challenger beside the champion: deterministic canary routing, and a shadow that never
touches the champion's answers, even when it raises or is slow."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from serving.scoring.challenger import CANARY, IDLE, NORMAL, SHADOW, Challenger, canary_share_of
from serving.scoring.runtime import FraudModel
from serving.scoring.scorer import Scorer
from settings import ServingConfig
from tests.code.models import FEATURES, small_model


@pytest.fixture(scope="module")
def models() -> tuple[FraudModel, FraudModel]:
    return small_model(0, 0.5), small_model(1, 0.3)


def _rows(count: int) -> np.ndarray:
    """Feature rows for the scorer (not valid requests: decide() is told they were checked)."""
    return np.random.default_rng(5).uniform(0, 1, (count, len(FEATURES))).astype(np.float32)


async def _until(check, timeout: float = 10.0) -> None:
    """Wait for the shadow: it scores on a thread of idle priority, which on a busy machine
    runs only when every core has nothing else to do."""
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def _shadow_dropped() -> float:
    return REGISTRY.get_sample_value("fraud_challenger_shadow_dropped_rows_total") or 0.0


def test_canary_share_is_deterministic_and_near_its_share():
    keys = [f"tx-{i}" for i in range(20_000)]
    routed = canary_share_of(keys, 0.1)
    assert abs(routed.mean() - 0.1) < 0.01
    np.testing.assert_array_equal(canary_share_of(keys, 0.1), routed)  # a retry: the same model
    assert canary_share_of(keys, 0.2)[routed].all()  # a larger share keeps the earlier rows
    assert not canary_share_of(keys, 0.0).any() and canary_share_of(keys, 1.0).all()


def _scorer(models, mode, share=0.5, shadow_priority=IDLE):
    champion, challenger = models
    logged = []
    shadow = Challenger(
        challenger, champion.threshold, mode, share, 10_000, shadow_priority,
        on_scored=lambda *args: logged.append(args),
    )  # fmt: skip
    return Scorer(champion, ServingConfig(), challenger=shadow), logged


def test_canary_rows_are_decided_by_the_challenger_with_its_threshold(models):
    champion, challenger = models
    scorer, logged = _scorer(models, CANARY)
    matrix = _rows(400)
    ids = [f"tx-{i}" for i in range(400)]
    decided = asyncio.run(scorer.decide(matrix, "http", "req-1", ids, validated=True))
    routed = canary_share_of(ids, 0.5)
    assert 150 < routed.sum() < 250
    np.testing.assert_array_equal(
        decided.probabilities[routed], challenger.predict_proba(matrix[routed])
    )
    np.testing.assert_array_equal(
        decided.probabilities[~routed], champion.predict_proba(matrix[~routed])
    )
    assert {t for t, r in zip(decided.tags, routed, strict=True) if r} == {challenger.tag}
    assert set(decided.thresholds[routed]) == {challenger.threshold}
    np.testing.assert_array_equal(decided.decisions, decided.probabilities >= decided.thresholds)
    assert len(logged) == 1 and len(logged[0][0]) == 400  # every row logged for the challenger


def test_a_version_addresses_the_challenger(models):
    _, challenger = models
    scorer, _ = _scorer(models, SHADOW)
    decided = asyncio.run(
        scorer.decide(_rows(3), "oip_http", "r", validated=True, version=challenger.version)
    )
    assert decided.tags == [challenger.tag] * 3


def test_a_failing_shadow_never_touches_the_answer(models, monkeypatch):
    champion, challenger = models
    scorer, logged = _scorer(models, SHADOW)

    def broken(matrix):
        raise RuntimeError("challenger engine failure")

    monkeypatch.setattr(challenger, "predict_proba", broken)

    async def run():
        decided = await scorer.decide(_rows(10), "http", "req-2", validated=True)
        await _until(lambda: scorer.challenger.stats.errors)  # let the shadow fail
        return decided

    decided = asyncio.run(run())
    np.testing.assert_array_equal(decided.probabilities, champion.predict_proba(_rows(10)))
    assert decided.tags == [champion.tag] * 10
    assert scorer.challenger.stats.errors == 1 and not logged


def test_a_slow_shadow_is_not_waited_for_and_a_failing_canary_falls_back(models, monkeypatch):
    champion, challenger = models
    scorer, logged = _scorer(models, SHADOW)
    release = threading.Event()
    real = challenger.predict_proba

    def slow(matrix):
        release.wait(10)
        return real(matrix)

    monkeypatch.setattr(challenger, "predict_proba", slow)

    async def run():
        decided = await scorer.decide(_rows(5), "http", "req-3", validated=True)
        answered_before_shadow = scorer.challenger.stats.scored_rows == 0
        release.set()
        await _until(lambda: logged)
        return decided, answered_before_shadow

    decided, answered_before_shadow = asyncio.run(run())
    assert answered_before_shadow and decided.tags == [champion.tag] * 5
    assert scorer.challenger.stats.scored_rows == 5 and len(logged) == 1

    def broken(matrix):
        raise RuntimeError("down")

    monkeypatch.setattr(challenger, "predict_proba", broken)
    canary, _ = _scorer(models, CANARY, share=1.0)
    fallback = asyncio.run(canary.decide(_rows(4), "http", "req-4", ["a", "b", "c", "d"], True))
    assert fallback.tags == [champion.tag] * 4  # the champion decided; the failure was counted
    assert canary.challenger.stats.errors == 1


def test_shadowed_requests_that_wait_together_are_scored_as_one_batch(models, monkeypatch):
    champion, challenger = models
    scorer, logged = _scorer(models, SHADOW)
    scorer.challenger.max_queued_rows = 20
    release = threading.Event()
    calls = []
    real = challenger.predict_proba

    def slow(matrix):
        calls.append(len(matrix))
        release.wait(10)
        return real(matrix)

    monkeypatch.setattr(challenger, "predict_proba", slow)
    requests = {f"req-{n}": _rows(rows) * (n + 1) / 10 for n, rows in enumerate([5, 3, 3, 3, 9])}

    async def run():
        answers = {}
        for request_id, matrix in requests.items():
            decided = await scorer.decide(matrix, "http", request_id, validated=True)
            answers[request_id] = decided
            await _until(lambda: calls)  # the first batch is being scored, the others wait
        release.set()
        await _until(lambda: len(logged) == 2)
        return answers

    dropped_before = _shadow_dropped()
    answers = asyncio.run(run())
    for request_id, matrix in requests.items():  # the champion answered every request
        np.testing.assert_array_equal(
            answers[request_id].probabilities, champion.predict_proba(matrix)
        )
    assert calls == [5, 9]  # one request alone, then the three that waited, in one call
    stats = scorer.challenger.stats
    assert stats.dropped_rows == 9 and stats.scored_rows == 14  # 5 + 9 over the bound of 20
    assert _shadow_dropped() - dropped_before == 9  # and counted for Prometheus
    shadowed = np.concatenate([requests[f"req-{n}"] for n in range(4)])
    agreeing = (real(shadowed) >= challenger.threshold) == (
        champion.predict_proba(shadowed) >= champion.threshold
    )
    assert stats.agreeing_rows == agreeing.sum()  # compared over each call's rows
    # handed on once a call, each request's rows in their place
    assert [[r.request_id for r in call[2]] for call in logged] == [["req-0"], [*requests][1:4]]
    for scores, decisions, called in logged:
        assert [r.rows for r in called] == [len(requests[r.request_id]) for r in called]
        np.testing.assert_array_equal(
            scores, real(np.concatenate([requests[r.request_id] for r in called]))
        )
        np.testing.assert_array_equal(decisions, scores >= challenger.threshold)


@pytest.mark.parametrize("shadow_priority", [IDLE, NORMAL])
def test_the_shadow_scores_at_its_priority_and_the_canary_at_the_champions(
    models, monkeypatch, shadow_priority
):
    """Idle: the shadow's thread runs only on CPU the champion leaves (the kernel's SCHED_IDLE
    policy, read back from the thread that scored); the canary is on the response path and keeps
    the champion's policy either way."""
    champion, challenger = models
    real = challenger.predict_proba
    policies = []

    def recording(matrix):
        policies.append(os.sched_getscheduler(0))
        return real(matrix)

    monkeypatch.setattr(challenger, "predict_proba", recording)
    shadow, _ = _scorer(models, SHADOW, shadow_priority=shadow_priority)

    async def shadowed():
        await shadow.decide(_rows(3), "http", "req-5", validated=True)
        await _until(lambda: policies)

    asyncio.run(shadowed())
    canary, _ = _scorer(models, CANARY, share=1.0, shadow_priority=shadow_priority)
    asyncio.run(canary.decide(_rows(2), "http", "req-6", ["a", "b"], True))
    expected = os.SCHED_IDLE if shadow_priority == IDLE else os.sched_getscheduler(0)
    assert policies == [expected, os.sched_getscheduler(0)]
    assert os.sched_getscheduler(0) != os.SCHED_IDLE  # the test's own thread was left alone
    shadow.challenger.shutdown()
    canary.challenger.shutdown()
