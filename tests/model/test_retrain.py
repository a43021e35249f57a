"""`python -m training retrain` on a regime change: the champion, trained before it, loses to a
challenger trained after it on the same most recent window; promotion follows the rule, and
every decision is logged with its figures."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import model_store
from tests.conftest import run_module

pytestmark = pytest.mark.slow


def _cli(*args: str, env: dict[str, str]):
    result = run_module("training", *args, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_retrain_compares_on_the_latest_window_and_promotes_on_evidence(regime_change, tmp_path):
    env = {
        "FRAUD_STORE__PIN_FILE": str(tmp_path / "model.lock"),
        "FRAUD_STORE__PROMOTION_LOG": str(tmp_path / "promotions.jsonl"),
        "FRAUD_RUNS_DIR": str(tmp_path / "runs"),
        "FRAUD_TUNING__TRIALS": "1",
        "FRAUD_PROMOTION__BOOTSTRAP_SAMPLES": "200",
    }
    before, after, champion = regime_change.before, regime_change.after, regime_change.champion
    pinned = run_module("model_store", "promote", champion, "--reason", "the champion", env=env)
    assert pinned.returncode == 0, pinned.stderr[-3000:]

    first = _cli("retrain", "--data", str(after), "--promote", env=env)
    challenger = model_store.current(tmp_path / "model.lock")
    assert challenger != champion and f"promoted {challenger} (was {champion})" in first.stdout
    (record,) = [r for r in model_store.history(tmp_path / "promotions.jsonl") if r.evidence]
    comparison = record.evidence
    last_day = pd.read_parquet(after)["tx_datetime"].max().normalize()
    assert pd.Timestamp(comparison["window"]["end"]) == last_day + pd.Timedelta(days=1)
    assert comparison["champion"]["rows"] == comparison["challenger"]["rows"] > 1000
    assert comparison["challenger"]["pr_auc"] > comparison["champion"]["pr_auc"] + 0.1
    assert comparison["pr_auc_gain"]["low"] > 0 and comparison["decision"]["promote"]
    run = sorted((tmp_path / "runs").iterdir())[-1]
    assert json.loads((run / "comparison.json").read_text()) == comparison
    summary = (run / "summary.md").read_text()
    assert "Champion vs challenger" in summary and "comparison_curves.png" in summary
    assert (run / "comparison_scores.png").stat().st_size > 10_000

    # Retrained again on the same data, the new model is no better than the one it replaced:
    # it is registered, not promoted, and the decision is logged; the command still succeeds.
    second = _cli("retrain", "--data", str(after), "--promote", env=env)
    assert model_store.current(tmp_path / "model.lock") == challenger
    assert f"not promoted: {challenger} stays the champion" in second.stdout
    declined = model_store.history(tmp_path / "promotions.jsonl")[-1]
    assert declined.action == "decline" and declined.from_tag == challenger
    assert not declined.evidence["decision"]["promote"]
    assert any(r.startswith("NOT met") for r in declined.evidence["decision"]["reasons"])

    refused = run_module(
        "training", "retrain", "--data", str(before), env=env, timeout=300
    )  # the champion was trained on part of that table's latest window
    assert refused.returncode == 2 and "retrain on newer data" in refused.stderr
