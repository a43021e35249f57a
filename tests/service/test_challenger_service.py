"""A challenger in a real server: a Bento that carries both models, a canary share decided by
the challenger (the same transaction always meeting the same model), OIP addressing by
version, and both models' realized figures from the same labels."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest
import yaml

import model_store
from serving.scoring.challenger import canary_share_of
from serving.scoring.runtime import FraudModel
from tests.conftest import REPO_ROOT, run_module, train_small
from tests.service.conftest import BENTOML, start_server, stop_server

pytestmark = pytest.mark.slow
SHARE = 0.5


@pytest.fixture(scope="module")
def challenger_tag(served_tag, tmp_path_factory) -> str:
    runs = tmp_path_factory.mktemp("challenger-runs")
    result = train_small(runs, 3, env={"FRAUD_SEED": "5"})  # registered, not promoted
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = runs.iterdir()
    tag = json.loads((run / "metrics.json").read_text())["model_tag"]
    assert tag != served_tag
    return tag


@pytest.fixture(scope="module")
def bento_with_challenger(challenger_tag) -> str:
    result = subprocess.run(
        [BENTOML, "build", ".", "--output", "tag"],
        cwd=REPO_ROOT,
        env={**os.environ, "FRAUD_CHALLENGER_TAG": challenger_tag},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1].removeprefix("__tag__:")


def test_a_bento_carries_and_serves_its_challenger_in_canary(
    bento_with_challenger, served_tag, challenger_tag, transactions, tmp_path
):
    bento = bentoml.get(bento_with_challenger)
    manifest = yaml.safe_load(Path(bento.path_of("bento.yaml")).read_text())
    carried = [m["tag"] for service in manifest["services"] for m in service["models"]]
    assert carried == [served_tag, challenger_tag]

    server = start_server(
        bento_with_challenger,
        tmp_path / "serve.log",
        env={
            "FRAUD_CHALLENGER__MODE": "canary",
            "FRAUD_CHALLENGER__CANARY_SHARE": str(SHARE),
            "FRAUD_MONITORING__DIRECTORY": str(tmp_path / "monitoring"),
            "FRAUD_MONITORING__REALIZED_REFRESH_S": "1",
        },
    )
    try:
        rows = [{**row, "transaction_id": f"canary-{i}"} for i, row in enumerate(transactions)]
        retry = {"X-Request-ID": "canary-batch"}  # the second is a retry: logged once
        first = httpx.post(
            f"{server.url}/predict", json={"transactions": rows}, headers=retry, timeout=30
        )
        again = httpx.post(
            f"{server.url}/predict", json={"transactions": rows}, headers=retry, timeout=30
        )
        assert first.status_code == again.status_code == 200, first.text
        predictions = first.json()["predictions"]
        tags = [p["model_tag"] for p in predictions]
        assert tags == [p["model_tag"] for p in again.json()["predictions"]]  # same id, same model
        routed = canary_share_of([row["transaction_id"] for row in rows], SHARE)
        assert tags == [challenger_tag if r else served_tag for r in routed]

        challenger = FraudModel.load(challenger_tag)
        names = challenger.feature_names
        matrix = np.float32([[row[name] for name in names] for row in rows])
        offline = challenger.predict_proba(matrix)
        served = np.float32([p["fraud_probability"] for p in predictions])
        np.testing.assert_array_equal(served[routed], offline[routed])
        assert {p["threshold"] for p, r in zip(predictions, routed, strict=True) if r} == {
            challenger.threshold
        }

        version = challenger_tag.split(":")[1]
        assert version in httpx.get(f"{server.url}/v2/models/fraud_rf").json()["versions"]
        addressed = httpx.post(
            f"{server.url}/v2/models/fraud_rf/versions/{version}/infer",
            json={
                "inputs": [
                    {"name": "features", "shape": list(matrix[:5].shape), "datatype": "FP32",
                     "data": matrix[:5].ravel().tolist()}
                ]
            },
        )  # fmt: skip
        assert addressed.status_code == 200 and addressed.json()["model_version"] == version
        np.testing.assert_array_equal(
            np.float32(addressed.json()["outputs"][0]["data"]), offline[:5]
        )

        labels = [
            {"transaction_id": row["transaction_id"], "is_fraud": bool(i % 7 == 0)}
            for i, row in enumerate(rows)
        ]
        assert httpx.post(f"{server.url}/feedback", json={"labels": labels}).status_code == 200

        def compared() -> dict:
            return httpx.get(f"{server.url}/challenger").json()

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            realized = compared()["realized"]
            if realized["challenger"] and realized["challenger"]["labelled"] == len(rows):
                break
            time.sleep(0.5)
        report = compared()
        assert report["mode"] == "canary" and report["challenger"] == challenger_tag
        assert report["realized"]["champion"]["labelled"] == len(rows)  # the same transactions
        assert report["realized"]["challenger"]["labelled"] == len(rows)
        assert report["this_worker"]["decided_rows"] == 2 * int(routed.sum()) + 5  # and OIP
        assert report["this_worker"]["errors"] == 0

        # The live comparison from the prediction log, then promotion of the challenger with it.
        files = {
            "FRAUD_STORE__PIN_FILE": str(tmp_path / "model.lock"),
            "FRAUD_STORE__CHALLENGER_PIN_FILE": str(tmp_path / "challenger.lock"),
            "FRAUD_STORE__PROMOTION_LOG": str(tmp_path / "promotions.jsonl"),
            "FRAUD_MONITORING__DIRECTORY": str(tmp_path / "monitoring"),
        }
        (tmp_path / "model.lock").write_text(served_tag + "\n")
        compared = run_module(
            "model_store", "compare", served_tag, challenger_tag, "--json", env=files
        )
        assert compared.returncode == 0, compared.stderr[-2000:]
        live = json.loads(compared.stdout[compared.stdout.index("{") :])["live"]
        assert live["champion"]["rows"] == live["challenger"]["rows"] == len(rows)
        assert run_module("model_store", "challenger", challenger_tag, env=files).returncode == 0
        promoted = run_module("model_store", "promote", challenger_tag, env=files)
        assert promoted.returncode == 0, promoted.stderr[-2000:]
        record = model_store.history(tmp_path / "promotions.jsonl")[-1]
        assert record.action == "promote" and record.to_tag == challenger_tag
        assert record.evidence["live"]["challenger"]["rows"] == len(rows)
        assert not (tmp_path / "challenger.lock").exists()  # it is the champion now
    finally:
        stop_server(server)
