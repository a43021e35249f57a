"""Concurrent requests are merged into shared forest calls without mixing up answers."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from tests.service.conftest import metric_samples

pytestmark = pytest.mark.slow
WAVES, CONCURRENCY = 4, 64


def _batches(server) -> tuple[float, float]:
    samples = metric_samples(server, "fraud_batch_requests")
    return samples["fraud_batch_requests_count"], samples['fraud_batch_requests_bucket{le="1.0"}']


async def _send_all(server, bodies: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
        return await asyncio.gather(*(client.post("/predict", json=body) for body in bodies))


def test_concurrent_single_rows_match_one_offline_call(server, transactions, offline_probabilities):
    count_before, singles_before = _batches(server)
    rows = transactions[: WAVES * CONCURRENCY]
    responses = []
    for wave in range(WAVES):
        chunk = rows[wave * CONCURRENCY : (wave + 1) * CONCURRENCY]
        responses += asyncio.run(_send_all(server, [{"transactions": [row]} for row in chunk]))
    assert all(r.status_code == 200 for r in responses), {r.status_code for r in responses}
    scores = np.float32([r.json()["predictions"][0]["fraud_probability"] for r in responses])
    np.testing.assert_array_equal(scores, offline_probabilities[: len(rows)])
    ids = [r.json()["predictions"][0]["transaction_id"] for r in responses]
    assert ids == [row["transaction_id"] for row in rows]

    count_after, singles_after = _batches(server)
    batches = count_after - count_before
    assert batches < len(rows), "no two requests shared a forest call"
    assert singles_after - singles_before < batches, "every batch held a single request"


def test_bad_requests_do_not_disturb_good_ones_in_flight(
    server, transactions, offline_probabilities
):
    bodies = []
    for index, row in enumerate(transactions[:CONCURRENCY]):
        if index % 4 == 3:
            bodies.append({"transactions": [{**row, "tx_amount": -1.0}]})
        else:
            bodies.append({"transactions": [row, transactions[index + 1]]})
    responses = asyncio.run(_send_all(server, bodies))
    for index, response in enumerate(responses):
        if index % 4 == 3:
            assert response.status_code == 400
            assert response.json()["detail"][0]["loc"] == ["transactions", 0, "tx_amount"]
        else:
            assert response.status_code == 200, response.text
            scores = [p["fraud_probability"] for p in response.json()["predictions"]]
            np.testing.assert_array_equal(
                np.float32(scores), offline_probabilities[index : index + 2]
            )
