"""Serving components without a server: validation, the batcher, codecs, request types."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pydantic import ValidationError

from serving.contract import rules
from serving.contract.refusals import InvalidInput, Overloaded
from serving.protocols import oip
from serving.scoring.batching import AdaptiveBatcher
from serving.scoring.runtime import FraudModel
from settings import ColumnsConfig
from tests.code.models import small_model
from training.features import feature_schema

FEATURES = [feature.as_dict() for feature in feature_schema(ColumnsConfig())]
NAMES = [feature["name"] for feature in FEATURES]


@pytest.fixture(scope="module")
def model() -> FraudModel:
    return small_model(0)


def _valid_rows(count: int) -> np.ndarray:
    return np.zeros((count, len(NAMES)), dtype=np.float32)


def test_valid_matrix_passes_and_scores(model):
    matrix = _valid_rows(4)
    rules.MatrixCheck(model.schema, max_rows=10)(matrix)
    scores = model.predict_proba(matrix)
    assert scores.dtype == np.float32 and scores.shape == (4,)


def test_validation_names_every_bad_row_and_field(model):
    matrix = _valid_rows(3)
    matrix[0, NAMES.index("tx_amount")] = np.nan
    matrix[1, NAMES.index("customer_nb_tx_7d")] = 2.5
    matrix[2, NAMES.index("terminal_risk_1d")] = 1.5
    matrix[2, NAMES.index("tx_amount")] = -1
    with pytest.raises(InvalidInput) as raised:
        rules.MatrixCheck(model.schema, max_rows=10)(matrix)
    found = {(v.row, v.field, v.reason) for v in raised.value.violations}
    assert found == {
        (0, "tx_amount", "must be a finite number"),
        (1, "customer_nb_tx_7d", "must be an integer"),
        (2, "terminal_risk_1d", "must be <= 1.0"),
        (2, "tx_amount", "must be >= 0.0"),
    }
    assert "row 0, field 'tx_amount'" in str(raised.value)


@pytest.mark.parametrize(
    ("shape", "message"), [((2, 5), "expected [N, 18]"), ((11, 18), "rows must be 1..10")]
)
def test_validation_checks_shape_and_row_count(model, shape, message):
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[")):
        rules.MatrixCheck(model.schema, max_rows=10)(np.zeros(shape, dtype=np.float32))


def test_batcher_merges_concurrent_calls_and_returns_each_its_own_rows():
    calls: list[int] = []

    def score(matrix: np.ndarray) -> np.ndarray:
        calls.append(len(matrix))
        return matrix.sum(axis=1)

    async def run() -> list[tuple[np.ndarray, np.ndarray]]:
        batcher = AdaptiveBatcher(score, max_batch_size=64, max_latency_ms=2000)
        rng = np.random.default_rng(1)
        results = []
        for _wave in range(6):
            inputs = [rng.normal(size=(int(rng.integers(1, 4)), 3)) for _ in range(40)]
            outputs = await asyncio.gather(*(batcher.probabilities(m) for m in inputs))
            results += list(zip(inputs, outputs, strict=True))
        batcher.shutdown()
        return results

    results = asyncio.run(run())
    for matrix, scores in results:
        np.testing.assert_array_equal(scores, matrix.sum(axis=1))
    assert sum(calls) == sum(len(matrix) for matrix, _ in results)
    assert max(calls) > 3, "no call held more than one request"
    assert max(calls) <= 64


def test_oip_codec_errors():
    with pytest.raises(oip.OIPError, match="needs 6 values, got 5"):
        oip.to_matrix("features", "FP32", [2, 3], np.zeros(5))
    with pytest.raises(oip.OIPError, match="datatype INT64"):
        oip.to_matrix("features", "INT64", [1, 3], np.zeros(3))
    with pytest.raises(oip.OIPError, match="unknown output logits"):
        oip.requested_outputs(["probability", "logits"])
    assert oip.requested_outputs([]) == ["probability", "is_fraud"]
    matrix = oip.to_matrix("features", "FP64", [2, 3], np.arange(6.0))
    assert matrix.dtype == np.float32 and matrix.shape == (2, 3)


def test_transaction_type_is_strict_and_reports_failed_fields(model):
    failed: list[set[str]] = []
    transaction = rules.transaction_model(model.schema, on_invalid=failed.append)
    row = dict.fromkeys(NAMES, 0)
    assert transaction.model_validate({**row, "transaction_id": "t1"}).transaction_id == "t1"
    for bad in (
        {**row, "tx_amount": "3.0"},
        {**row, "tx_during_night": True},
        {**row, "tx_amount": float("inf")},
        {**row, "surprise": 1},
    ):
        with pytest.raises(ValidationError):
            transaction.model_validate(bad)
    assert failed == [{"tx_amount"}, {"tx_during_night"}, {"tx_amount"}, {"unknown_field"}]


def test_batcher_sheds_work_that_waited_past_the_bound_and_keeps_serving():
    def slow(matrix: np.ndarray) -> np.ndarray:
        import time

        time.sleep(0.05)
        return matrix[:, 0]

    async def run():
        batcher = AdaptiveBatcher(slow, max_batch_size=1, max_latency_ms=20)
        outcomes = await asyncio.gather(
            *(batcher.probabilities(np.full((1, 2), i, float)) for i in range(4)),
            return_exceptions=True,
        )
        after = await batcher.probabilities(np.full((1, 2), 9.0))
        batcher.shutdown()
        return outcomes, after

    outcomes, after = asyncio.run(run())
    assert outcomes[0] == np.array([0.0])
    assert any(isinstance(o, Overloaded) for o in outcomes[1:])
    np.testing.assert_array_equal(after, [9.0])


def test_batcher_reports_engine_errors_to_that_batch_only():
    def fragile(matrix: np.ndarray) -> np.ndarray:
        if (matrix < 0).any():
            raise RuntimeError("engine failure")
        return matrix[:, 0]

    async def run():
        batcher = AdaptiveBatcher(fragile, max_batch_size=1, max_latency_ms=5000)
        outcomes = await asyncio.gather(
            batcher.probabilities(np.full((1, 1), -1.0)),
            batcher.probabilities(np.full((1, 1), 2.0)),
            return_exceptions=True,
        )
        batcher.shutdown()
        return outcomes

    failed, served = asyncio.run(run())
    assert isinstance(failed, RuntimeError)
    np.testing.assert_array_equal(served, [2.0])


def test_oip_one_input_per_feature(model):
    names = model.feature_names
    rows = np.arange(3 * len(names), dtype=np.float32).reshape(3, len(names))  # all distinct

    def column(name: str, shape=None, datatype="FP64") -> oip.InputTensor:
        values = rows[:, names.index(name)].astype(np.float64)
        return oip.InputTensor(name, datatype, shape or [3], values)

    shuffled = [column(name, [3, 1]) for name in reversed(names)]
    np.testing.assert_array_equal(oip.feature_matrix(model, shuffled), rows)
    with pytest.raises(oip.OIPError, match=f"missing input {names[0]}: one input per feature"):
        oip.feature_matrix(model, shuffled[:-1])
    with pytest.raises(oip.OIPError, match="unknown input 'card_id'"):
        oip.feature_matrix(model, [*shuffled, oip.InputTensor("card_id", "FP64", [3], rows[:, 0])])
    with pytest.raises(oip.OIPError, match="given twice"):
        oip.feature_matrix(model, [*shuffled, shuffled[0]])
    with pytest.raises(oip.OIPError, match=r"shape must be \[N\] or \[N, 1\]"):
        oip.feature_matrix(model, [column(names[0], [1, 3]), *shuffled[:-1]])
    with pytest.raises(oip.OIPError, match="datatype BYTES is not supported"):
        oip.values_from_json("tx_amount", "BYTES", ["a"])
