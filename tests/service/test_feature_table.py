"""Bring your own features: a table with only an id, a timestamp, a label and ready feature
columns trains, registers and serves a model whose request schema is exactly those features,
over /predict, OIP and monitoring."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

from monitoring import SCORE_COLUMN
from serving.scoring.runtime import FraudModel
from settings import load_settings
from tests.conftest import run_module
from tests.feature_table import CONFIG, FEATURES, feature_table
from tests.service.conftest import at_window_start, start_server, stop_server
from training.data import write_table
from training.features import build_features, request_rows

pytestmark = pytest.mark.slow
WINDOW_S = 3.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("feature_table")
    config = folder / "features.toml"
    config.write_text(CONFIG)
    table = feature_table()
    data = write_table(table, folder / "features.csv")
    result = run_module(
        "training", "--config", str(config), "train", "--data", str(data), "--trials", "2",
        "--runs-dir", str(folder / "runs"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (folder / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    settings = load_settings(config)
    features = build_features(table, settings.columns, settings.split.delay_days).tail(400)
    return metrics, request_rows(features, settings.columns), folder


def test_the_model_learns_from_the_tables_own_features(trained):
    metrics, rows, _ = trained
    assert metrics["test_metrics"]["roc_auc"] > 0.9
    assert "precision_top_100_per_day" in metrics["test_metrics"]  # no cards to count
    assert set(rows[0]) == set(FEATURES)


def test_serving_takes_exactly_the_tables_features(trained):
    metrics, rows, folder = trained
    tag = metrics["model_tag"]
    server = start_server(
        ".",
        folder / "serve.log",
        env={
            "FRAUD_MODEL_TAG": tag,
            "FRAUD_MONITORING__WINDOW_S": str(WINDOW_S),
            "FRAUD_MONITORING__PROFILE_MAX_ROWS_PER_S": "100000",
            "FRAUD_MONITORING__DIRECTORY": str(folder / "monitoring"),
        },
    )
    try:
        info = httpx.get(f"{server.url}/model_info").json()
        assert [feature["name"] for feature in info["features"]] == FEATURES
        order = httpx.get(f"{server.url}/v2/models/fraud_rf").json()["inputs"][0]["parameters"]
        assert order["feature_order"].split(",") == FEATURES

        at_window_start(WINDOW_S)
        response = httpx.post(f"{server.url}/predict", json={"transactions": rows}, timeout=30)
        assert response.status_code == 200, response.text
        served = np.float32([p["fraud_probability"] for p in response.json()["predictions"]])
        model = FraudModel.load(tag)
        matrix = np.float32([[row[name] for name in FEATURES] for row in rows])
        np.testing.assert_allclose(served, model.predict_proba(matrix), atol=1e-6)

        payment = httpx.post(
            f"{server.url}/predict", json={"transactions": [{**rows[0], "tx_amount": 10.0}]}
        )
        assert payment.status_code == 400 and "tx_amount" in payment.text
        missing = {name: value for name, value in rows[0].items() if name != "signal_b"}
        refused = httpx.post(f"{server.url}/predict", json={"transactions": [missing]})
        assert refused.status_code == 400 and "signal_b" in refused.text
        flag = httpx.post(
            f"{server.url}/predict", json={"transactions": [{**rows[0], "device_known": 2}]}
        )
        assert flag.status_code == 400 and "device_known" in flag.text  # 0/1 from the data

        by_feature = [
            {"name": "device_known", "shape": [len(rows)], "datatype": "BOOL",
             "data": [bool(row["device_known"]) for row in rows]},
            {"name": "events_7d", "shape": [len(rows), 1], "datatype": "INT64",
             "data": [row["events_7d"] for row in rows]},
            *({"name": name, "shape": [len(rows)], "datatype": "FP64",
               "data": [row[name] for row in rows]} for name in ("signal_b", "signal_a")),
        ]  # fmt: skip
        oip = httpx.post(f"{server.url}/v2/models/fraud_rf/infer", json={"inputs": by_feature})
        assert oip.status_code == 200, oip.text
        np.testing.assert_array_equal(np.float32(oip.json()["outputs"][0]["data"]), served)

        time.sleep(WINDOW_S + 1.5)
        drift = httpx.get(f"{server.url}/drift").json()
        assert drift["status"] == "ok" and drift["rows"] == len(rows) + len(rows)
        assert {feature["feature"] for feature in drift["features"]} == {*FEATURES, SCORE_COLUMN}
        assert drift["drift_detected"] is False, drift["drifted_features"]
    finally:
        stop_server(server)
