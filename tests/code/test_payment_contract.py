"""/score's request contract: the lean payment decoder reads every body exactly as the documented
pydantic model does (a property test over bodies in a table's own column names), and what only
the documented model reads (a time in Unix seconds) is scored through it."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from model_store.contract import FLOAT32_MAX, FeatureSchema
from serving.contract.refusals import InvalidBody
from serving.payments.payment_requests import (
    PaymentBatch,
    PaymentsDecoder,
    payment_model,
    payment_struct,
)
from settings import ColumnsConfig
from training.features import feature_schema

COLUMNS = ColumnsConfig(
    transaction_id="payment_id",
    timestamp="created_at",
    customer_id="card_id",
    terminal_id="merchant_terminal",
    amount="amount_eur",
    extra_features=["merchant_risk_score"],
)
RISK_SCORES = pd.DataFrame({"merchant_risk_score": [0.0, 0.4, 1.0]})  # a float in [0, 1]
SCHEMA = FeatureSchema(tuple(feature_schema(COLUMNS, RISK_SCORES)))
MAX_ROWS = 4
ROW_MODEL = payment_model(COLUMNS, SCHEMA, on_invalid=lambda fields: None)
DECODER = PaymentsDecoder(COLUMNS, SCHEMA, MAX_ROWS)


def _payment(**change) -> dict:
    payment = {
        "payment_id": "p-1",
        "created_at": "2026-07-01T12:30:00Z",
        "card_id": "card-1",
        "merchant_terminal": 17,
        "amount_eur": 42.5,
        "merchant_risk_score": 0.25,
    }
    return {**payment, **change}


def _as_tuples(batch: PaymentBatch) -> tuple:
    return [msgspec.structs.astuple(p) for p in batch.payments], batch.extras.tolist()


def _lean(body: bytes):
    try:
        batch, with_features = DECODER.rows(body)
    except InvalidBody as error:
        return "refused", sorted(json.dumps(d["loc"]) for d in error.payload()["detail"])
    return _as_tuples(batch), with_features


def _documented(body: bytes):
    request = DECODER.documented_rows
    try:
        parsed = request.model_validate_json(body)
    except ValidationError as error:
        return "refused", sorted(json.dumps(d["loc"]) for d in error.errors())
    return _as_tuples(DECODER.typed(parsed.payments)), parsed.include_features


TIMES = st.sampled_from(
    [
        "2026-07-01T12:30:00Z",
        "2026-07-01T12:30:00",
        "2026-07-01T12:30:00.123456+02:00",
        "2026-07-01T12:30:00.5-05:30",
        "2026-07-01 12:30:00",
        "2026-07-01",
        "2026-13-01T00:00:00",
        "yesterday",
        1_782_908_000,
        1_782_908_000.25,
        None,
        True,
    ]
)
KEYS = st.one_of(
    st.text(max_size=3), st.integers(-5, 10**6), st.just("x" * 129), st.just(2**70)
) | st.sampled_from([None, True, 1.5, ["a"]])
AMOUNTS = st.one_of(
    st.floats(-10, 1e4, allow_nan=False),
    st.integers(-3, 100),
    st.sampled_from([1e39, FLOAT32_MAX, "12.5", True, None]),
)
RISKS = st.one_of(st.floats(-1, 2, allow_nan=False), st.sampled_from([1, "0.5", None, 1e39]))


@st.composite
def payments(draw) -> dict:
    payment = _payment()
    for field, values in (
        ("payment_id", KEYS),
        ("created_at", TIMES),
        ("card_id", KEYS),
        ("merchant_terminal", KEYS),
        ("amount_eur", AMOUNTS),
        ("merchant_risk_score", RISKS),
    ):
        if draw(st.integers(0, 3)) == 0:
            payment[field] = draw(values)
    if draw(st.integers(0, 9)) == 0:
        del payment[draw(st.sampled_from(sorted(payment)))]
    if draw(st.integers(0, 9)) == 0:
        payment["surprise"] = 1
    return payment


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payments(), max_size=MAX_ROWS + 1), st.sampled_from([None, True, False, "yes"]))
def test_the_lean_decoder_reads_every_body_as_the_documented_model(rows, include):
    body = {"payments": rows} | ({} if include is None else {"include_features": include})
    encoded = json.dumps(body).encode()
    assert _lean(encoded) == _documented(encoded)


def test_a_time_in_unix_seconds_is_read_by_the_documented_model():
    body = json.dumps({"payments": [_payment(created_at=1_782_909_000, payment_id=7)]}).encode()
    batch, with_features = DECODER.rows(body)
    assert batch.payments[0].time_ns == 1_782_909_000 * 10**9
    assert batch.payments[0].transaction_id == "7" and not with_features
    np.testing.assert_array_equal(batch.extras, [[0.25]])


def test_the_common_forms_take_the_lean_path():
    lean = msgspec.json.Decoder(list[payment_struct(COLUMNS, SCHEMA)])
    common = [_payment(), _payment(payment_id=12, created_at="2026-07-01T12:30:00.5+02:00")]
    decoded = lean.decode(json.dumps(common))
    assert [p.transaction_id for p in decoded] == ["p-1", 12]
