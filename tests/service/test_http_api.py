"""The typed HTTP API of a real server: /predict, /explain, info endpoints, bad input."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time

import bentoml
import httpx
import numpy as np
import pytest

import model_store
from settings import ColumnsConfig
from tests.conftest import REPO_ROOT, changed
from tests.service.conftest import metric_samples, start_server, stop_server
from training.features import feature_names

pytestmark = pytest.mark.slow
FEATURE_ORDER = feature_names(ColumnsConfig())


def _predict(server, rows, **headers) -> httpx.Response:
    return httpx.post(f"{server.url}/predict", json={"transactions": rows}, headers=headers)


def test_predict_scores_like_the_offline_model(server, transactions, offline_probabilities):
    response = _predict(server, transactions[:50], **{"X-Request-ID": "req-42"})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "req-42"
    body = response.json()
    assert body["request_id"] == "req-42"
    predictions = body["predictions"]
    assert [p["transaction_id"] for p in predictions] == [
        row["transaction_id"] for row in transactions[:50]
    ]
    scores = np.array([p["fraud_probability"] for p in predictions], dtype=np.float32)
    np.testing.assert_array_equal(scores, offline_probabilities[:50])
    for prediction in predictions:
        assert prediction["is_fraud"] == (
            prediction["fraud_probability"] >= prediction["threshold"]
        )
        assert prediction["model_tag"] == body["model_tag"]
        assert prediction["request_id"] == "req-42"


def test_request_id_is_made_when_absent_or_unsafe(server, transactions):
    first = _predict(server, transactions[:1])
    unsafe = _predict(server, transactions[:1], **{"X-Request-ID": "a b\tc" * 30})
    for response in (first, unsafe):
        assert response.status_code == 200
        assert len(response.headers["x-request-id"]) == 32
    assert first.headers["x-request-id"] != unsafe.headers["x-request-id"]


def test_bentoml_clients_call_every_endpoint_by_name(server, transactions, offline_probabilities):
    names = [name for name in transactions[0] if name != "transaction_id"]
    with bentoml.SyncHTTPClient(server.url) as client:
        rows = client.predict(transactions=transactions[:3])
        columns = client.predict_columns(
            columns=names[::-1],
            data=[[row[name] for name in names[::-1]] for row in transactions[:3]],
            transaction_ids=[row["transaction_id"] for row in transactions[:3]],
        )
        payment = {
            "transaction_id": "client-payment-1",
            # the examples' day: a later time would put them past the shared server's horizon
            "tx_datetime": "2026-07-01T12:00:00Z",
            "customer_id": "client-card",
            "terminal_id": "client-terminal",
            "tx_amount": 30.0,
        }
        scored = client.score(payments=[payment], include_features=True)
        scored_columns = client.score_columns(
            columns=list(payment), data=[list(payment.values())], include_features=True
        )
        explained = client.explain(transactions=transactions[:1], top_k=2)
        labelled = client.feedback(
            labels=[{"transaction_id": transactions[0]["transaction_id"], "is_fraud": False}]
        )
        client.client.headers["X-Request-ID"] = (
            "retry-me-1"  # as the retry example in docs/monitoring.md
        )
        retried = [client.predict(transactions=transactions[:1]) for _ in range(2)]
    assert [r["request_id"] for r in retried] == ["retry-me-1", "retry-me-1"]
    for result in (rows, columns):
        scores = [p["fraud_probability"] for p in result["predictions"]]
        np.testing.assert_array_equal(np.float32(scores), offline_probabilities[:3])
    assert [p["transaction_id"] for p in columns["predictions"]] == [
        row["transaction_id"] for row in transactions[:3]
    ]
    # the columns were a retry of the same payment: counted once, the same features
    assert scored["predictions"][0]["features"]["customer_nb_tx_30d"] == 0
    assert scored_columns["predictions"][0]["features"] == scored["predictions"][0]["features"]
    assert len(explained["explanations"][0]["contributions"]) == 2
    assert labelled["received"] == 1

    async def call_async() -> dict:
        async with bentoml.AsyncHTTPClient(server.url) as client:
            return await client.predict(transactions=transactions[3:5])

    result = asyncio.run(call_async())
    scores = [p["fraud_probability"] for p in result["predictions"]]
    np.testing.assert_array_equal(np.float32(scores), offline_probabilities[3:5])


def _columns(server, columns, data, **extra) -> httpx.Response:
    return httpx.post(
        f"{server.url}/predict_columns", json={"columns": columns, "data": data, **extra}
    )


def test_columnar_form_scores_like_rows_and_names_its_errors(
    server, transactions, offline_probabilities
):
    data = [[row[name] for name in FEATURE_ORDER] for row in transactions[:100]]
    response = _columns(server, FEATURE_ORDER, data, transaction_ids=None)
    assert response.status_code == 200, response.text
    scores = [p["fraud_probability"] for p in response.json()["predictions"]]
    np.testing.assert_array_equal(np.float32(scores), offline_probabilities[:100])
    assert response.headers["x-request-id"] == response.json()["request_id"]

    bad = [list(values) for values in data[:3]]
    bad[2][FEATURE_ORDER.index("tx_amount")] = -1.0
    key = 'fraud_validation_failures_total{field="tx_amount",protocol="http"}'
    before = metric_samples(server, "fraud_validation_failures_total").get(key, 0.0)
    refused = _columns(server, FEATURE_ORDER, bad)
    assert refused.status_code == 400
    assert refused.json()["detail"][0]["loc"] == ["data", 2, "tx_amount"]
    assert metric_samples(server, "fraud_validation_failures_total")[key] == before + 1
    missing = _columns(server, FEATURE_ORDER[1:], [values[1:] for values in data[:1]])
    assert missing.status_code == 400 and missing.json()["detail"][0]["loc"] == ["columns"]
    assert "missing tx_amount" in missing.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("change", "field", "kind"),
    [
        ({"tx_amount": -3.0}, "tx_amount", "greater_than_equal"),
        ({"tx_amount": "12.5"}, "tx_amount", "float_type"),
        ({"tx_amount": True}, "tx_amount", "float_type"),
        ({"tx_during_night": 2}, "tx_during_night", "less_than_equal"),
        ({"customer_nb_tx_7d": 3.5}, "customer_nb_tx_7d", "int_type"),
        ({"terminal_risk_7d": KeyError}, "terminal_risk_7d", "missing"),
        ({"merchant_secret": 1.0}, "merchant_secret", "extra_forbidden"),
    ],
)
def test_bad_rows_get_400_naming_field_and_row(server, transactions, change, field, kind):
    rows = [transactions[0], changed(transactions[1], **change)]
    response = _predict(server, rows)
    assert response.status_code == 400, response.text
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["transactions", 1, field]
    assert detail["type"] == kind
    assert _predict(server, transactions[:1]).status_code == 200


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(server, transactions, literal):
    body = httpx.Request("POST", "/", json={"transactions": [transactions[0]]}).content.decode()
    value = f"{transactions[0]['tx_amount']}"
    body = body.replace(f'"tx_amount":{value}', f'"tx_amount":{literal}', 1)
    assert literal in body
    response = httpx.post(
        f"{server.url}/predict", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert "tx_amount" in response.text


@pytest.mark.parametrize("count", [0, 1001])
def test_row_count_is_bounded(server, transactions, count):
    rows = (transactions * 4)[:count]
    response = _predict(server, rows)
    assert response.status_code == 400
    assert response.json()["detail"][0]["loc"] == ["transactions"]


def test_malformed_json_is_a_client_error(server):
    response = httpx.post(
        f"{server.url}/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500


def test_validation_failures_are_counted_by_field(server, transactions):
    key = 'fraud_validation_failures_total{field="terminal_risk_1d",protocol="http"}'
    before = metric_samples(server, "fraud_validation_failures_total").get(key, 0.0)
    response = _predict(server, [changed(transactions[0], terminal_risk_1d=1.5)])
    assert response.status_code == 400
    after = metric_samples(server, "fraud_validation_failures_total")
    assert after[key] == before + 1
    assert not any("merchant_secret" in sample for sample in after)


def test_explain_gives_additive_contributions(server, transactions, offline_probabilities):
    n_features = len([k for k in transactions[0] if k != "transaction_id"])
    response = httpx.post(
        f"{server.url}/explain",
        json={"transactions": transactions[:3], "top_k": n_features},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    for explanation, expected in zip(
        response.json()["explanations"], offline_probabilities[:3], strict=True
    ):
        shap_values = [c["shap"] for c in explanation["contributions"]]
        assert len(shap_values) == n_features
        assert [abs(v) for v in shap_values] == sorted(map(abs, shap_values), reverse=True)
        assert math.isclose(explanation["base_value"] + sum(shap_values), expected, abs_tol=1e-4)
    short = httpx.post(
        f"{server.url}/explain", json={"transactions": transactions[:1], "top_k": 2}, timeout=60
    )
    assert len(short.json()["explanations"][0]["contributions"]) == 2
    too_many = httpx.post(f"{server.url}/explain", json={"transactions": transactions[:51]})
    assert too_many.status_code == 400


def test_model_info_health_and_stats(server, served_tag, transactions):
    assert _predict(server, transactions[:2]).status_code == 200
    stored = model_store.get(served_tag)
    info = httpx.get(f"{server.url}/model_info").json()
    assert info["tag"] == served_tag
    assert info["sha256"] == stored.labels["sha256"]
    assert info["feature_hash"] == stored.labels["feature_hash"]
    assert [f["name"] for f in info["features"]] == [f["name"] for f in stored.features]
    assert info["threshold"] == stored.threshold
    assert info["engine"] == stored.labels["engine"].split("+")[0]
    assert info["engine"] in ("tl2cgen", "onnx") and info["engine_fallbacks"] == {}
    assert all(check["max_abs_diff"] <= 1e-5 for check in info["engine_parity"].values())
    assert info["metrics"]["roc_auc"] > 0.5
    assert info["train_window"]["start"] < info["test_window"]["start"]
    assert info["promotion"]["to_tag"] == served_tag

    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "healthy" and health["model_tag"] == served_tag
    assert health["integrity_check"] == "passed" and health["grpc"] == "serving"

    stats = httpx.get(f"{server.url}/stats").json()
    assert stats["requests_total"] >= 1 and stats["rows"] >= 1
    assert {"p50", "p95", "p99"} <= stats["latency_ms"].keys()
    assert stats["batch_rows"]["batches"] >= 1
    assert httpx.get(f"{server.url}/livez").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_metrics_expose_ours_and_bentomls(server, transactions, served_tag):
    _predict(server, transactions[:5])
    text = httpx.get(f"{server.url}/metrics").text
    engine = model_store.get(served_tag).labels["engine"].split("+")[0]
    assert f'fraud_model_info{{engine="{engine}"' in text and served_tag in text
    for name in (
        "fraud_prediction_score_bucket",
        'fraud_decisions_total{decision="genuine"',
        "fraud_batch_rows_bucket",
        "fraud_requests_total",
        "bentoml_service_request_total",
        "bentoml_service_request_duration_seconds_bucket",
    ):
        assert name in text, name


def test_openapi_describes_every_endpoint(server):
    spec = httpx.get(f"{server.url}/docs.json").json()
    paths = spec["paths"]
    for path in ("/predict", "/explain", "/feedback"):
        operation = paths[path]["post"]
        assert operation["requestBody"]["content"]["application/json"]["schema"]
        assert operation["responses"]["200"]["content"]["application/json"]["schema"]
    for path in ("/health", "/model_info", "/stats", "/v2", "/v2/models/{name}"):
        assert "get" in paths[path]
    infer = paths["/v2/models/{name}/infer"]["post"]
    assert infer["responses"]["200"]["content"]["application/json"]["schema"]


def test_the_api_document_is_the_projects_with_working_examples(server, served_tag):
    spec = httpx.get(f"{server.url}/docs.json").json()
    assert spec["info"]["title"] == "fraud-bento"
    assert spec["info"]["version"] == served_tag
    assert "contact" not in spec["info"] and "BentoML" not in spec["info"]["description"]
    groups = [tag["name"] for tag in spec["tags"]]
    assert groups[0] == "scoring" and "Open Inference Protocol" in groups
    for path, item in spec["paths"].items():
        for operation in item.values():
            assert operation["tags"][0] in groups, path
    assert spec["paths"]["/predict"]["post"]["tags"] == ["scoring"]
    assert spec["paths"]["/v2/models/{name}/config"]["get"]["tags"] == ["Open Inference Protocol"]
    scoring = {
        "/predict": "/predict",
        "/predict_columns": "/predict_columns",
        "/score": "/score",
        "/score_columns": "/score_columns",
        "/explain": "/explain",
        "/v2/models/{name}/infer": "/v2/models/fraud_rf/infer",
        "/v1/models/{name}:predict": "/v1/models/fraud_rf:predict",
    }
    for documented, path in scoring.items():
        body = spec["paths"][documented]["post"]["requestBody"]["content"]["application/json"]
        response = httpx.post(f"{server.url}{path}", json=body["example"], timeout=10)
        assert response.status_code == 200, (documented, response.text)


def test_docs_page_shows_the_whole_api_from_this_server(server):
    page = httpx.get(f"{server.url}/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assets = re.findall(r'(?:src|href|url:)\s*=?\s*"([^"]+)"', page.text)
    assert assets and not [a for a in assets if not a.startswith("./")]  # no CDN, no host
    for asset in assets:
        fetched = httpx.get(f"{server.url}/{asset.removeprefix('./')}")
        assert fetched.status_code == 200 and len(fetched.content) > 1000, asset
    documented = httpx.get(f"{server.url}/docs.json").json()["paths"]
    public = {
        "/predict", "/predict_columns", "/score", "/score_columns", "/explain", "/feedback",
        "/health", "/model_info", "/stats", "/drift", "/v2", "/v2/health/live",
        "/v2/health/ready", "/v2/models/{name}",
        "/v2/models/{name}/ready", "/v2/models/{name}/config", "/v2/models/{name}/infer",
    }  # fmt: skip
    assert public <= set(documented), public - set(documented)


def test_readme_example_requests(server):
    """The README's and `make run`'s curl lines, as they are written."""
    answers = {}
    for path, example in (("/predict", "test_request.json"), ("/score", "score_request.json")):
        response = httpx.post(
            f"{server.url}{path}",
            content=(REPO_ROOT / "ops" / "examples" / example).read_bytes(),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        answers[path] = response.json()["predictions"]
        assert f"-d @ops/examples/{example}" in (REPO_ROOT / "README.md").read_text()
    assert len(answers["/predict"]) == 2
    _, second = answers["/score"]
    assert second["features"]["customer_nb_tx_1d"] == 1  # the first payment, a minute earlier
    assert "-d @ops/examples/score_request.json" in (REPO_ROOT / "Makefile").read_text()


def _log_lines(server, request_id: str) -> list[dict]:
    lines = []
    for line in server.output().splitlines():
        if line.startswith("{") and request_id in line:
            lines.append(json.loads(line))
    return lines


def _send_one_good_one_bad(server, transactions, prefix: str) -> None:
    ok = httpx.post(
        f"{server.url}/predict",
        json={"transactions": transactions[:3]},
        headers={"X-Request-ID": f"{prefix}-ok"},
    )
    bad_row = {**transactions[0], "tx_amount": -5.0}
    bad = httpx.post(
        f"{server.url}/v2/models/fraud_rf/infer",
        json={
            "id": f"{prefix}-bad",
            "inputs": [
                {
                    "name": "features",
                    "shape": [1, 18],
                    "datatype": "FP32",
                    "data": [bad_row[name] for name in FEATURE_ORDER],
                }
            ],
        },
    )
    assert ok.status_code == 200 and bad.status_code == 400


def test_refusals_are_logged_and_scored_requests_only_when_asked(server, transactions):
    _send_one_good_one_bad(server, transactions, "default-log")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not _log_lines(server, "default-log-bad"):
        time.sleep(0.1)
    (refused,) = _log_lines(server, "default-log-bad")
    assert refused["outcome"] == "invalid" and refused["invalid_fields"] == ["tx_amount"]
    assert _log_lines(server, "default-log-ok") == []  # FRAUD_SERVING__REQUEST_LOG is off


def test_requests_are_logged_as_json_lines_without_feature_values(
    transactions, served_tag, tmp_path
):
    server = start_server(".", tmp_path / "serve.log", env={"FRAUD_SERVING__REQUEST_LOG": "true"})
    try:
        _send_one_good_one_bad(server, transactions, "log-check")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(_log_lines(server, "log-check-")) < 2:
            time.sleep(0.1)
    finally:
        stop_server(server)
    (scored,) = _log_lines(server, "log-check-ok")
    assert scored["logger"] == "fraud_bento.requests" and scored["level"] == "INFO"
    assert scored["model_tag"] == served_tag and scored["protocol"] == "http"
    assert scored["rows"] == 3 and scored["outcome"] == "ok" and scored["latency_ms"] > 0
    (refused,) = _log_lines(server, "log-check-bad")
    assert refused["outcome"] == "invalid" and refused["invalid_fields"] == ["tx_amount"]
    for line in (scored, refused):
        assert not set(line) & set(FEATURE_ORDER)
        assert "-5.0" not in json.dumps(line)
