"""Hostile and broken input against a real server: schemathesis (its CLI: its pytest plugin does
not run on pytest 9) from the service's own OpenAPI document, and property tests of validation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from settings import ColumnsConfig
from training.features import feature_names

pytestmark = pytest.mark.slow
ORDER = feature_names(ColumnsConfig())
EXAMPLES_PER_ENDPOINT = 40


def test_schemathesis_finds_no_5xx_and_no_schema_violation(server, tmp_path):
    """Every operation of the service's OpenAPI document, with a bounded number of generated
    (valid and invalid) requests each: no 5xx, every response conforms to its schema."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "st"),
            "run",
            f"{server.url}/docs.json",
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance",
            "--max-examples",
            str(EXAMPLES_PER_ENDPOINT),
            "--seed",
            "20261127",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:]
    (report,) = tmp_path.glob("junit-*.xml")
    cases = ElementTree.parse(report).iter("testcase")  # noqa: S314 - our own report
    tested = {case.get("name") for case in cases}
    assert {"POST /predict", "POST /feedback", "POST /v2/models/{name}/infer"} <= tested, tested


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


@given(body=json_values)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_json_is_scored_or_refused_with_a_4xx(server, body):
    response = httpx.post(
        f"{server.url}/predict",
        content=json.dumps({"transactions": [body]}),  # NaN and Infinity literals included
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.text  # names what is wrong


raw_rows = st.fixed_dictionaries(
    {name: st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False) for name in ORDER}
)


@given(rows=st.lists(raw_rows, min_size=1, max_size=20))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_valid_rows_always_score(server, rows, model_ranges):
    """Any numbers, brought inside each feature's declared range and type, score."""
    rows = [{k: _clip(v, model_ranges[k]) for k, v in row.items()} for row in rows]
    response = httpx.post(f"{server.url}/predict", json={"transactions": rows}, timeout=30)
    assert response.status_code == 200, response.text
    probabilities = [p["fraud_probability"] for p in response.json()["predictions"]]
    assert len(probabilities) == len(rows) and all(0 <= p <= 1 for p in probabilities)


@pytest.fixture(scope="module")
def model_ranges(server) -> dict[str, dict]:
    return {f["name"]: f for f in httpx.get(f"{server.url}/model_info").json()["features"]}


def _clip(value, spec: dict):
    if spec.get("minimum") is not None:
        value = max(value, spec["minimum"])
    if spec.get("maximum") is not None:
        value = min(value, spec["maximum"])
    return int(value) if spec["dtype"].startswith("int") else float(value)
