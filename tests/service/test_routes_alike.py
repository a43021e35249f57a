"""Every scoring route answers alike whether the front door's lean path takes it or BentoML's
stack does (`serving.fast_path` on and off): the same status, body and X-Request-ID, for a valid
body and for a refused one, on every scoring route of the route table."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from serving.http import routes
from tests.service.conftest import start_server, stop_server

pytestmark = pytest.mark.slow
PAYMENT = {
    "transaction_id": "alike-1",
    "tx_datetime": "2026-07-25T00:00:00+00:00",  # after every payment of the backfilled state
    "customer_id": "card-alike",
    "terminal_id": "terminal-alike",
    "tx_amount": 12.5,
}


@pytest.fixture(scope="module")
def servers(served_tag, payment_history, tmp_path_factory):
    """Two servers of the same model, each with its own copy of the same payment state: the
    lean path on (the default) and off."""

    def start(fast_path: bool):
        folder = tmp_path_factory.mktemp(f"fast-path-{str(fast_path).lower()}")
        state = folder / "payment_state.db"
        shutil.copy(payment_history, state)
        return start_server(
            ".",
            folder / "serve.log",
            env={
                "FRAUD_SERVING__FAST_PATH": str(fast_path).lower(),
                "FRAUD_PAYMENTS__STATE_PATH": str(state),
                "FRAUD_MONITORING__DIRECTORY": str(folder / "monitoring"),
            },
        )

    with ThreadPoolExecutor(2) as pool:
        lean, stack = pool.map(start, [True, False])
    try:
        for server in (lean, stack):
            assert server.process.poll() is None, server.output()[-3000:]
        yield lean, stack
    finally:
        stop_server(lean)
        stop_server(stack)


def _bodies(transactions: list[dict], version: str) -> dict[str, list[tuple[str, dict]]]:
    """Per scoring route of the route table: (path, body) pairs, valid and refused."""
    rows = transactions[:3]
    names = [name for name in rows[0] if name != "transaction_id"]
    values = [[row[name] for name in names] for row in rows]
    ids = [row["transaction_id"] for row in rows]
    missing = {k: v for k, v in rows[0].items() if k != names[0]}
    tensor = {
        "inputs": [
            {
                "name": "features",
                "shape": [3, len(names)],
                "datatype": "FP32",
                "data": [x for v in values for x in v],
            }
        ]
    }
    infer = "/v2/models/fraud_rf/infer"
    v1 = "/v1/models/fraud_rf:predict"
    return {
        "/predict": [
            ("/predict", {"transactions": rows}),
            ("/predict", {"transactions": [missing]}),
            ("/predict", {"transactions": [{**rows[0], names[0]: "many"}]}),
        ],
        "/predict_columns": [
            ("/predict_columns", {"columns": names, "data": values, "transaction_ids": ids}),
            ("/predict_columns", {"columns": names[1:], "data": [v[1:] for v in values]}),
        ],
        "/score": [
            ("/score", {"payments": [PAYMENT], "include_features": True}),
            ("/score", {"payments": [{**PAYMENT, "tx_amount": -1.0}]}),
        ],
        "/score_columns": [
            ("/score_columns", {"columns": list(PAYMENT), "data": [list(PAYMENT.values())]}),
            (
                "/score_columns",
                {"columns": list(PAYMENT)[1:], "data": [list(PAYMENT.values())[1:]]},
            ),
        ],
        "/v1/models/{name}:predict": [
            (v1, {"instances": values}),
            (v1, {"instances": [v[1:] for v in values]}),
            ("/v1/models/other:predict", {"instances": values}),
        ],
        "/v2/models/{name}/infer": [(infer, tensor), (infer, {"inputs": []})],
        "/v2/models/{name}/versions/{version}/infer": [
            (f"/v2/models/fraud_rf/versions/{version}/infer", tensor),
            ("/v2/models/fraud_rf/versions/other/infer", tensor),
        ],
    }


def test_the_lean_path_and_the_typed_endpoints_answer_alike(servers, transactions, served_tag):
    lean, stack = servers
    bodies = _bodies(transactions, served_tag.split(":", 1)[1])
    assert set(bodies) == {route.path for route in routes.SCORING_ROUTES}  # every one, no other
    statuses = set()
    number = 0
    for route in routes.SCORING_ROUTES:
        for path, body in bodies[route.path]:
            number += 1
            headers = {"X-Request-ID": f"alike-{number}"}
            answers = [
                httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=30)
                for server in (lean, stack)
            ]
            first, second = answers
            where = (path, body)
            assert first.status_code == second.status_code, (where, first.text, second.text)
            assert first.json() == second.json(), where
            assert first.headers["x-request-id"] == second.headers["x-request-id"]
            assert first.headers["x-request-id"] == f"alike-{number}"
            statuses.add(first.status_code)
    assert {200, 400, 404} <= statuses  # valid bodies, refused ones, an unknown model
