"""The request contract: the lean decoders and the documented pydantic models accept and refuse
the same bodies (a property test), refusals name every problem by location, responses match
the documented schema; bulk histogram observation is exact."""

from __future__ import annotations

import json

import numpy as np
import prometheus_client
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from model_store.contract import FLOAT32_MAX, FeatureSchema
from serving.contract import rules, schema
from serving.contract.refusals import InvalidBody, InvalidInput
from serving.protocols import codec
from serving.scoring.scorer import Decided
from serving.telemetry import metrics
from settings import ColumnsConfig
from tests.conftest import changed
from training.features import feature_schema

SCHEMA = FeatureSchema(tuple(feature_schema(ColumnsConfig())))
NAMES = SCHEMA.names
MAX_ROWS = 5
TYPED = rules.transaction_model(SCHEMA, on_invalid=lambda fields: None)
DOCUMENTED = codec.predict_request_model(TYPED, MAX_ROWS)
ROWS = codec.RowsDecoder(SCHEMA, MAX_ROWS)
COLUMNS = codec.ColumnsDecoder(NAMES, MAX_ROWS)


def _row(**change) -> dict:
    row = {feature.name: (1 if feature.integral else 0.5) for feature in SCHEMA}
    return changed({**row, "tx_amount": 12.5, "transaction_id": "t1"}, **change)


def _locations(locations) -> str:
    return json.dumps(sorted(json.dumps(list(location)) for location in locations))


def _lean(decode, body: bytes) -> str | None:
    """None when the lean decoder accepts the body, else the locations its 400 names."""
    try:
        decode(body)
    except (InvalidBody, InvalidInput) as error:
        return _locations(d["loc"] for d in error.payload()["detail"])
    return None


def _documented(model, body: bytes) -> str | None:
    try:
        model.model_validate_json(body)
    except ValidationError as error:
        return _locations(d["loc"] for d in error.errors())
    return None


# Values a client might send for a feature: in and out of range, the wrong type, beyond float32.
VALUES = st.one_of(
    st.integers(-3, 40),
    st.floats(-2, 2e4, allow_nan=False),
    st.sampled_from([1e39, -1e39, FLOAT32_MAX, 3.0, 0.0, 1, True, False, "1.5", None, [1]]),
)
IDS = st.one_of(st.none(), st.text(max_size=3), st.just("x" * 129), st.just(7))


@st.composite
def rows(draw) -> dict:
    row = _row(transaction_id=draw(IDS))
    for name in draw(st.lists(st.sampled_from(NAMES), max_size=3)):
        row[name] = draw(VALUES)
    if draw(st.booleans()) and draw(st.booleans()):
        del row[draw(st.sampled_from(NAMES))]
    if draw(st.integers(0, 9)) == 0:
        row["merchant_secret"] = 1.0
    return row


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rows(), max_size=MAX_ROWS + 1))
def test_rows_lean_and_documented_agree(transactions):
    body = json.dumps({"transactions": transactions}).encode()
    lean = _lean(ROWS.decode, body)
    assert lean == _documented(DOCUMENTED, body)


@st.composite
def columnar_bodies(draw) -> bytes:
    count = draw(st.integers(0, MAX_ROWS + 1))
    columns = draw(st.permutations(NAMES))
    data = [[0.5] * len(NAMES) for _ in range(count)]
    for _ in range(draw(st.integers(0, 3))):
        if data:
            data[draw(st.integers(0, count - 1))][draw(st.integers(0, len(NAMES) - 1))] = draw(
                VALUES
            )
    body: dict = {"columns": columns, "data": data}
    if draw(st.booleans()):
        body["transaction_ids"] = [draw(IDS) for _ in range(count)]
    if draw(st.integers(0, 9)) == 0:
        body["extra"] = 1
    return json.dumps(body).encode()


@settings(max_examples=300, deadline=None)
@given(columnar_bodies())
def test_columns_lean_and_documented_agree_on_the_body(body):
    assert _lean(COLUMNS.parse, body) == _documented(rules.ColumnsRequest, body)


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
    with pytest.raises(InvalidBody):
        ROWS.decode(body)
    with pytest.raises(ValidationError):
        DOCUMENTED.model_validate({"transactions": rows})


def test_a_refused_body_names_every_problem_where_it_is():
    rows = [_row(), _row(tx_amount=-3.0, tx_during_night=2), _row(surprise=1)]
    with pytest.raises(InvalidBody) as error:
        ROWS.decode(json.dumps({"transactions": rows}).encode())
    payload = error.value.payload()
    assert {tuple(d["loc"]) for d in payload["detail"]} == {
        ("transactions", 1, "tx_amount"),
        ("transactions", 1, "tx_during_night"),
        ("transactions", 2, "surprise"),
    }
    assert payload["error"] == "3 validation errors for Input"  # as BentoML words it


def test_row_decoder_refuses_non_json_numbers_and_bodies():
    body = json.dumps({"transactions": [_row()]}).replace("12.5", "NaN").encode()
    for bad in (body, b"{not json", b'{"rows": []}'):
        with pytest.raises(InvalidBody):
            ROWS.decode(bad)


def test_row_decoder_gives_the_typed_apis_matrix():
    rows = [_row(), _row(tx_amount=7, transaction_id=None), _row(customer_nb_tx_1d=3)]
    matrix, ids = ROWS.decode(json.dumps({"transactions": rows}).encode())
    typed = [TYPED.model_validate(row) for row in rows]
    np.testing.assert_array_equal(matrix, schema.to_matrix(typed, NAMES))
    assert matrix.dtype == np.float32 and ids == ["t1", None, "t1"]


def _columns_body(columns, data, **extra) -> bytes:
    return json.dumps({"columns": columns, "data": data, **extra}).encode()


def _arranged(body: bytes):
    parsed = COLUMNS.parse(body)
    return COLUMNS.arrange(parsed.columns, parsed.data, parsed.transaction_ids)


def test_columns_in_any_order_give_the_model_order():
    reversed_names = NAMES[::-1]
    data = [[float(i + j) for i in range(len(NAMES))] for j in range(3)]
    matrix, ids = _arranged(_columns_body(reversed_names, data, transaction_ids=["a", None, "c"]))
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
        (_columns_body(NAMES, [[0.0] * 17 + ["x"]]), ["data", 0, 17], "valid number"),
        (b'{"columns": []', ["body"], "Invalid JSON"),
        (_columns_body(NAMES, [[0.0] * 18], extra=1), ["extra"], "Extra inputs"),
    ],
)
def test_columnar_structure_errors_name_their_place(body, location, words):
    with pytest.raises((InvalidInput, InvalidBody)) as error:
        _arranged(body)
    detail = error.value.payload()["detail"]
    assert list(detail[0]["loc"]) in (location, location[1:]) and words in detail[0]["msg"]


def test_columnar_body_names_every_structural_problem_at_once():
    body = _columns_body(
        [*NAMES[1:], "zz"], [[0.0] * 18, [0.0] * 17, [0.0] * 16], transaction_ids=["a"]
    )
    with pytest.raises(InvalidInput) as error:
        _arranged(body)
    assert [d["loc"] for d in error.value.payload()["detail"]] == [
        ["columns"],
        ["columns"],
        ["data", 1],
        ["data", 2],
        ["transaction_ids"],
    ]


def test_columnar_value_errors_name_row_and_feature():
    matrix = np.zeros((3, len(NAMES)), dtype=np.float32)
    matrix[2, 0] = -1
    with pytest.raises(InvalidInput) as raised:
        rules.MatrixCheck(SCHEMA, MAX_ROWS)(matrix)
    detail = codec.in_columns(raised.value).payload()["detail"]
    assert [d["loc"] for d in detail] == [["data", 2, "tx_amount"]]


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
    metrics.observe_many(bulk, values)

    def samples(name):
        return {
            (s.name.replace(name, ""), tuple(sorted(s.labels.items()))): s.value
            for metric in registry.collect()
            if metric.name == name
            for s in metric.samples
            if not s.name.endswith("_created")
        }

    assert samples("one") == samples("bulk")
