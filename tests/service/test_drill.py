"""The model-replacement drill, end to end with real servers: a regime change hurts the served
champion; retraining on newer data registers a challenger; in shadow it scores the same traffic
and the same labels favour it; in canary it decides its share; it is promoted with that evidence,
a rebuilt Bento serves it, and a rollback brings the champion back."""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import model_store
from settings import ColumnsConfig
from tests.conftest import REPO_ROOT, run_module
from tests.service.conftest import BENTOML, start_server, stop_server
from training.data import read_table
from training.features import build_features, request_rows

pytestmark = pytest.mark.slow
COLUMNS = ColumnsConfig()
TRAFFIC_ROWS = 4000


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    return result


def _traffic(table_path) -> tuple[list[dict], list[dict]]:
    """Transactions from after the change (days 150 on), with their true labels."""
    features = build_features(read_table(table_path), COLUMNS, delay_days=7)
    day = (features[COLUMNS.timestamp] - features[COLUMNS.timestamp].min().normalize()).dt.days
    later = features.loc[day >= 150].head(TRAFFIC_ROWS)
    ids = [f"drill-{i}" for i in later[COLUMNS.transaction_id]]
    features_rows = request_rows(later, COLUMNS)
    rows = [{**row, "transaction_id": tx} for row, tx in zip(features_rows, ids, strict=True)]
    labels = [
        {"transaction_id": tx, "is_fraud": bool(label)}
        for tx, label in zip(ids, later[COLUMNS.label], strict=True)
    ]
    return rows, labels


def _serve_traffic_and_labels(server, rows, labels) -> None:
    for start in range(0, len(rows), 100):
        answer = httpx.post(
            f"{server.url}/predict",
            json={"transactions": rows[start : start + 100]},
            headers={"X-Request-ID": f"drill-batch-{start}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
    time.sleep(1.0)  # the monitoring process writes its log every half second
    answer = httpx.post(f"{server.url}/feedback", json={"labels": labels}, timeout=60).json()
    assert answer["matched"] == len(labels), answer


def _until(check, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return value


def test_retrain_shadow_canary_promote_rebuild_roll_back(regime_change, tmp_path):
    env = {
        "FRAUD_STORE__PIN_FILE": str(tmp_path / "model.lock"),
        "FRAUD_STORE__CHALLENGER_PIN_FILE": str(tmp_path / "challenger.lock"),
        "FRAUD_STORE__PROMOTION_LOG": str(tmp_path / "promotions.jsonl"),
        "FRAUD_RUNS_DIR": str(tmp_path / "runs"),
        "FRAUD_TUNING__TRIALS": "1",
        "FRAUD_PROMOTION__BOOTSTRAP_SAMPLES": "200",
        "FRAUD_MONITORING__REALIZED_REFRESH_S": "1",
    }
    after, champion = regime_change.after, regime_change.champion
    _ok(run_module("model_store", "promote", champion, "--reason", "the champion", env=env))
    rows, labels = _traffic(after)

    # 1. The champion serves traffic from after the change; the labels show what it costs.
    served = start_server(
        ".", tmp_path / "1" / "serve.log",
        env={**env, "FRAUD_MONITORING__DIRECTORY": str(tmp_path / "1" / "monitoring")},
    )  # fmt: skip
    try:
        _serve_traffic_and_labels(served, rows, labels)
        alone = _until(lambda: httpx.get(f"{served.url}/stats").json()["realized"])
        assert alone["model_tag"] == champion and alone["labelled"] == len(rows)
    finally:
        stop_server(served)

    # 2. Retraining on the newer table: a challenger, better offline on the latest window.
    retrained = _ok(run_module("training", "retrain", "--data", str(after), env=env, timeout=600))
    assert "the rule holds; not promoted without --promote" in retrained.stdout
    offline = model_store.history(tmp_path / "promotions.jsonl")[-1].evidence
    challenger = offline["challenger"]["tag"]
    assert offline["challenger"]["pr_auc"] > offline["champion"]["pr_auc"]
    assert model_store.current(tmp_path / "model.lock") == champion

    # 3. Shadow: the same traffic and labels; the live comparison favours the challenger.
    _ok(run_module("model_store", "challenger", challenger, env=env))
    monitoring = {"FRAUD_MONITORING__DIRECTORY": str(tmp_path / "3" / "monitoring")}
    shadow = start_server(".", tmp_path / "3" / "serve.log", env={**env, **monitoring})
    try:
        _serve_traffic_and_labels(shadow, rows, labels)

        def both_labelled():
            report = httpx.get(f"{shadow.url}/challenger").json()
            realized = report["realized"]
            done = all(realized[r] and realized[r]["labelled"] == len(rows) for r in realized)
            return report if done else None

        report = _until(both_labelled)
        assert report and report["mode"] == "shadow" and report["this_worker"]["errors"] == 0
        same = report["realized"]["champion"]  # the same transactions and labels as alone
        assert (same["labelled"], same["pr_auc"]) == (alone["labelled"], alone["pr_auc"])
        assert report["realized"]["challenger"]["pr_auc"] > report["realized"]["champion"]["pr_auc"]
        compared = _ok(
            run_module("model_store", "compare", champion, challenger, "--json",
                       env={**env, **monitoring})
        )  # fmt: skip
        live = json.loads(compared.stdout[compared.stdout.index("{") :])["live"]
        assert live["decision"]["promote"], live["decision"]["reasons"]
    finally:
        stop_server(shadow)

    # 4. Canary: half of the transactions decided by the challenger, the rest by the champion.
    canary = start_server(
        ".", tmp_path / "4" / "serve.log",
        env={**env, **monitoring, "FRAUD_CHALLENGER__MODE": "canary",
             "FRAUD_CHALLENGER__CANARY_SHARE": "0.5"},
    )  # fmt: skip
    try:
        answer = httpx.post(f"{canary.url}/predict", json={"transactions": rows[:200]}).json()
        deciders = {p["model_tag"] for p in answer["predictions"]}
        assert deciders == {champion, challenger}
    finally:
        stop_server(canary)

    # 5. Promote with the live evidence, rebuild: the new Bento serves the challenger.
    _ok(run_module("model_store", "promote", challenger, env={**env, **monitoring}))
    record = model_store.history(tmp_path / "promotions.jsonl")[-1]
    assert record.to_tag == challenger and record.evidence["live"]["decision"]["promote"]
    assert not (tmp_path / "challenger.lock").exists()

    def build() -> str:
        built = _ok(
            subprocess.run(
                [BENTOML, "build", ".", "--output", "tag"], cwd=REPO_ROOT,
                env={**os.environ, **env}, capture_output=True, text=True,
                timeout=300,
            )
        )  # fmt: skip
        return built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")

    def served_by(bento: str, name: str) -> tuple[str, str]:
        server = start_server(bento, tmp_path / name / "serve.log")
        try:
            info = httpx.get(f"{server.url}/model_info").json()
            return info["tag"], info["sha256"]
        finally:
            stop_server(server)

    def stored(tag: str) -> tuple[str, str]:
        return tag, model_store.get(tag).labels["sha256"]

    promoted_bento = build()

    # 6. Roll back by model tag: the pin returns to the champion, and so does a rebuilt Bento;
    # by Bento tag: the Bento built before serves the model it carries, whatever is pinned now.
    # Both Bentos are served at once, after the rollback.
    _ok(run_module("model_store", "rollback", env=env))
    assert model_store.current(tmp_path / "model.lock") == champion
    with ThreadPoolExecutor(2) as pool:
        promoted, rebuilt = pool.map(served_by, [promoted_bento, build()], ["5", "6"])
    assert promoted == stored(challenger)
    assert rebuilt == stored(champion)
