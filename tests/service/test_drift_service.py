"""Request profiling in a real server: /drift and the drift gauge follow simulated drift."""

from __future__ import annotations

import time

import httpx
import pytest

from settings import ColumnsConfig, SimulatorConfig
from tests.service.conftest import at_window_start, metric_samples, start_server, stop_server
from training.features import build_features, request_rows
from training.simulate import simulate

pytestmark = pytest.mark.slow
COLUMNS = ColumnsConfig()
WINDOW_S = 4.0
DRIFT_DAY = 80


def _rows(drift_start_day: int | None, first_day: int, count: int) -> list[dict]:
    config = SimulatorConfig(
        customers=200, terminals=400, days=110, seed=12, drift_start_day=drift_start_day
    )
    features = build_features(simulate(config), COLUMNS, delay_days=7)
    day = (features[COLUMNS.timestamp] - features[COLUMNS.timestamp].min().normalize()).dt.days
    return request_rows(features.loc[day >= first_day].head(count), COLUMNS)


def _send_window(server, rows: list[dict]) -> dict:
    at_window_start(WINDOW_S)
    for start in range(0, len(rows), 100):
        response = httpx.post(
            f"{server.url}/predict", json={"transactions": rows[start : start + 100]}, timeout=30
        )
        assert response.status_code == 200, response.text
    time.sleep(WINDOW_S + 1.5)
    return httpx.get(f"{server.url}/drift").json()


def test_drift_endpoint_and_gauge_follow_the_traffic(served_tag, tmp_path):
    directory = tmp_path / "monitoring"
    server = start_server(
        ".",
        tmp_path / "serve.log",
        env={
            "FRAUD_MONITORING__WINDOW_S": str(WINDOW_S),
            "FRAUD_MONITORING__PROFILE_MAX_ROWS_PER_S": "100000",  # profile every row
            "FRAUD_MONITORING__DIRECTORY": str(directory),
        },
    )
    try:
        assert httpx.get(f"{server.url}/drift").json()["status"] == "no window closed yet"
        steady = _send_window(server, _rows(None, DRIFT_DAY, 2000))
        assert steady["status"] == "ok" and steady["rows"] == steady["scored_rows"] == 2000
        assert steady["drift_detected"] is False, steady["drifted_features"]
        assert metric_samples(server, "fraud_drift_detected")["fraud_drift_detected"] == 0

        drifted = _send_window(server, _rows(DRIFT_DAY, DRIFT_DAY + 2, 2000))
        assert drifted["drift_detected"] is True
        assert {"tx_amount", "tx_during_night"} <= set(drifted["drifted_features"])
        by_feature = {f["feature"]: f for f in drifted["features"]}
        assert by_feature["tx_amount"]["test"] == "ks" and by_feature["tx_amount"]["p_value"] < 0.01
        assert "tx_during_weekend" not in by_feature
        samples = metric_samples(server, "fraud_drift")
        assert samples["fraud_drift_detected"] == 1
        assert samples['fraud_drift_category{feature="tx_amount"}'] == 2
        assert len(list(directory.glob("window-*.bin"))) >= 2
        assert httpx.get(f"{server.url}/health").json()["profiling"] == "available"
    finally:
        stop_server(server)
