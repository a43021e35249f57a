"""The alert rules and the Grafana dashboard, checked by the real Prometheus tools: promtool's
rule unit tests, and a Prometheus server scraping a running Bento that evaluates every PromQL
expression of the dashboard and the alerts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.service.conftest import (
    answers,
    at_window_start,
    free_port,
    start_server,
    stop_server,
)

PROMETHEUS_DIR = REPO_ROOT / "ops" / "prometheus"
DASHBOARD = REPO_ROOT / "ops" / "grafana" / "fraud-bento.json"
# What Grafana substitutes into the dashboard's queries.
GRAFANA_VARIABLES = {"$__rate_interval": "1m"}
WINDOW_S = 4.0


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's 'prometheus' package (.ci/run does)")
    return path


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_tool("promtool"), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120
    )


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        assert panel["targets"], f"panel '{panel['title']}' has no query"
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    return queries


def _alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_rules_and_config_pass_promtool():
    for args in (
        ("check", "rules", "alerts.yml"),
        ("check", "config", "prometheus.yml"),
        ("test", "rules", "alerts_test.yml"),
    ):
        result = _promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_firing_and_quiet_unit_tests():
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    checks = [check for test in tests for check in test["alert_rule_test"]]
    for rule in _alert_rules():
        outcomes = {bool(c["exp_alerts"]) for c in checks if c["alertname"] == rule["alert"]}
        assert outcomes == {True, False}, f"{rule['alert']}: needs a firing and a quiet case"
        assert rule["annotations"]["runbook"] == f"ops/RUNBOOK.md#{rule['alert'].lower()}"
        assert f"\n### {rule['alert']}\n" in (REPO_ROOT / "ops" / "RUNBOOK.md").read_text()


class Prometheus:
    def __init__(self, folder: Path, target: str):
        config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [target]}]
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = folder / "prometheus.log"
        self.process = subprocess.Popen(
            [
                _tool("prometheus"),
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def query(self, expr: str) -> list:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"{expr}: {body.get('error')}"
        return body["data"]["result"]

    def wait_ready(self, timeout: float = 30) -> None:
        if not answers(f"{self.url}/-/ready", timeout):
            raise TimeoutError(self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def _traffic(server, transactions: list[dict]) -> None:
    # One window's worth, enough rows to be judged (a smaller window reports no drift figures).
    at_window_start(WINDOW_S)
    for start in range(0, 300, 20):
        response = httpx.post(
            f"{server.url}/predict", json={"transactions": transactions[start : start + 20]}
        )
        assert response.status_code == 200, response.text
    bad = httpx.post(
        f"{server.url}/predict", json={"transactions": [{**transactions[0], "tx_amount": -1}]}
    )
    assert bad.status_code == 400
    labels = [
        {"transaction_id": row["transaction_id"], "is_fraud": i % 7 == 0}
        for i, row in enumerate(transactions[:200])
    ]
    feedback = httpx.post(f"{server.url}/feedback", json={"labels": labels})
    assert feedback.status_code == 200, feedback.text


@pytest.mark.slow
def test_prometheus_evaluates_every_dashboard_and_alert_query(served_tag, transactions, tmp_path):
    server = start_server(
        ".", tmp_path / "bento" / "serve.log", env={"FRAUD_MONITORING__WINDOW_S": str(WINDOW_S)}
    )
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{server.http_port}")
    try:
        prometheus.wait_ready()
        _traffic(server, transactions)
        time.sleep(WINDOW_S + 1)  # the window closes and a few scrapes land after the traffic
        _traffic(server, transactions)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not prometheus.query(
            'fraud_drift_detected{job="fraud-bento"}'
        ):
            time.sleep(1)
        time.sleep(3)
        assert prometheus.query('up{job="fraud-bento"} == 1'), "the Bento is not scraped"

        empty = []
        for title, expr in _dashboard_queries():
            if not prometheus.query(expr):
                empty.append(f"{title}: {expr}")
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

        for rule in _alert_rules():
            prometheus.query(rule["expr"])  # evaluates without error (firing or not)
        rules = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        states = {
            r["name"]: (r["health"], r.get("lastError", "")) for g in rules for r in g["rules"]
        }
        assert set(states) == {rule["alert"] for rule in _alert_rules()}
        assert all(health == "ok" for health, _ in states.values()), states
        firing = {a["metric"]["alertname"] for a in prometheus.query("ALERTS")}
        assert "FraudBentoDown" not in firing
    finally:
        prometheus.stop()
        stop_server(server)
