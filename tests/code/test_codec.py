"""The lean codecs: the row decoder is exactly as strict as the typed API, the columnar form names
every problem, responses match the documented schema; bulk histogram observation is exact."""

from __future__ import annotations

import json
from typing import Annotated

import numpy as np
import prometheus_client
import pytest
from pydantic import Field, TypeAdapter, ValidationError

from serving import codec, schema, telemetry
from serving.errors import InvalidInput, Violation
from serving.runtime import FeatureSpec
from serving.scorer import Decided
from settings import ColumnsConfig
from tests.conftest import changed
from training.features import feature_schema

SPECS = [
    FeatureSpec(f.name, f.dtype, f.minimum, f.maximum, "") for f in feature_schema(ColumnsConfig())
]
NAMES = [spec.name for spec in SPECS]
MAX_ROWS = 5


def _row(**change) -> dict:
    row = {spec.name: (1 if spec.integral else 0.5) for spec in SPECS}
    return changed({**row, "tx_amount": 12.5, "transaction_id": "t1"}, **change)


ROWS = codec.RowsDecoder(SPECS, MAX_ROWS)
TYPED = schema.transaction_model(SPECS, on_invalid=lambda fields: None)
TYPED_BATCH = TypeAdapter(Annotated[list[TYPED], Field(min_length=1, max_length=MAX_ROWS)])


@pytest.mark.parametrize(
    "rows",
    [
        [_row(tx_amount=-3.0)],
        [_row(tx_amount="12.5")],
        [_row(tx_amount=True)],
        [_row(tx_during_night=2)],
        [_row(customer_nb_tx_7d=3.5)],
        [_row(customer_nb_tx_7d=3.0)],  # a float for a count, even a whole one
        [_row(terminal_risk_7d=KeyError)],
        [_row(merchant_secret=1.0)],
        [_row(transaction_id="x" * 129)],
        [_row(tx_amount=1e39)],  # beyond float32
        [],
        [_row()] * (MAX_ROWS + 1),
    ],
)
def test_row_decoder_refuses_what_the_typed_api_refuses(rows):
    body = json.dumps({"transactions": rows}).encode()
    assert ROWS.decode(body) is None
    with pytest.raises(ValidationError):
        TYPED_BATCH.validate_python(rows)


def test_row_decoder_refuses_non_json_numbers_and_bodies():
    body = json.dumps({"transactions": [_row()]}).replace("12.5", "NaN").encode()
    assert ROWS.decode(body) is None
    assert ROWS.decode(b"{not json") is None
    assert ROWS.decode(b'{"rows": []}') is None


def test_row_decoder_gives_the_typed_apis_matrix():
    rows = [_row(), _row(tx_amount=7, transaction_id=None), _row(customer_nb_tx_1d=3)]
    matrix, ids = ROWS.decode(json.dumps({"transactions": rows}).encode())
    typed = [TYPED.model_validate(row) for row in rows]
    np.testing.assert_array_equal(matrix, schema.to_matrix(typed, NAMES))
    assert matrix.dtype == np.float32 and ids == ["t1", None, "t1"]


COLUMNS = codec.ColumnsDecoder(NAMES, MAX_ROWS)


def _columns_body(columns, data, **extra) -> bytes:
    return json.dumps({"columns": columns, "data": data, **extra}).encode()


def test_columns_in_any_order_give_the_model_order():
    reversed_names = NAMES[::-1]
    data = [[float(i + j) for i in range(len(NAMES))] for j in range(3)]
    matrix, ids = COLUMNS.decode(
        _columns_body(reversed_names, data, transaction_ids=["a", None, "c"])
    )
    np.testing.assert_array_equal(matrix[:, ::-1], np.array(data, dtype=np.float32))
    assert ids == ["a", None, "c"]


@pytest.mark.parametrize(
    ("body", "location", "words"),
    [
        (_columns_body(NAMES[1:], [[0.0] * 17]), ["columns"], "missing tx_amount"),
        (_columns_body([*NAMES, "zz"], [[0.0] * 19]), ["columns"], "unknown zz"),
        (_columns_body([*NAMES, NAMES[0]], [[0.0] * 19]), ["columns"], "named twice"),
        (_columns_body(NAMES, [[0.0] * 18, [0.0] * 17]), ["data", 1], "expected 18 values"),
        (_columns_body(NAMES, [[0.0] * 18], transaction_ids=[]), ["transaction_ids"], "1 ids"),
        (_columns_body(NAMES, []), ["data"], "rows must be 1..5"),
        (_columns_body(NAMES, [[0.0] * 17 + ["x"]]), ["data", 0], "Expected `float`"),
        (b'{"columns": []', ["body"], "not valid JSON"),
        (_columns_body(NAMES, [[0.0] * 18], extra=1), ["body"], "unknown field"),
    ],
)
def test_columnar_structure_errors_name_their_place(body, location, words):
    with pytest.raises(InvalidInput) as error:
        COLUMNS.decode(body)
    detail = json.loads(codec.columns_error_body(error.value))["detail"]
    assert detail[0]["loc"] == location and words in detail[0]["msg"]


def test_columnar_value_errors_name_row_and_feature():
    violation = InvalidInput(
        [Violation("tx_amount", 2, "must be >= 0.0"), Violation("data", 1, "short")]
    )
    detail = json.loads(codec.columns_error_body(violation))["detail"]
    assert [d["loc"] for d in detail] == [["data", 2, "tx_amount"], ["data", 1]]


def test_encoded_predictions_match_the_documented_response():
    probabilities = np.array([0.1, 0.35, 0.9], dtype=np.float32)
    thresholds = np.array([0.35, 0.5, 0.35])  # the middle row decided by a canary challenger
    decided = Decided(probabilities, probabilities >= thresholds, thresholds, ["m:a", "m:b", "m:a"])
    payload = codec.encode_predictions("req", ["a", None, "c"], decided)
    response = schema.PredictResponse.model_validate_json(payload)
    assert [p.is_fraud for p in response.predictions] == [False, False, True]
    assert [p.fraud_probability for p in response.predictions] == probabilities.tolist()
    assert [p.model_tag for p in response.predictions] == ["m:a", "m:b", "m:a"]
    assert [p.threshold for p in response.predictions] == [0.35, 0.5, 0.35]
    assert {p.request_id for p in response.predictions} == {"req"}
    assert response.model_tag == "m:a"


def test_bulk_observation_equals_one_observe_per_value():
    registry = prometheus_client.CollectorRegistry()
    buckets = (0.1, 0.5, 1.0)
    one = prometheus_client.Histogram("one", "", buckets=buckets, registry=registry)
    bulk = prometheus_client.Histogram("bulk", "", buckets=buckets, registry=registry)
    values = np.array([0.0, 0.1, 0.10001, 0.5, 0.7, 1.0, 3.0, 0.05])
    for value in values:
        one.observe(value)
    telemetry.observe_many(bulk, values)

    def samples(name):
        return {
            (s.name.replace(name, ""), tuple(sorted(s.labels.items()))): s.value
            for metric in registry.collect()
            if metric.name == name
            for s in metric.samples
            if not s.name.endswith("_created")
        }

    assert samples("one") == samples("bulk")
