"""The fast engine: ONNX Runtime behind a parity gate, with scikit-learn as the fallback."""

from __future__ import annotations

import numpy as np
import pytest

import model_store
from model_store import ModelIntegrityError, engines
from model_store.onnx_engine import OnnxEngine
from model_store.store import ARTIFACT_FILE
from serving.runtime import FraudModel
from settings import ColumnsConfig, Settings
from tests.conftest import SMALL_TABLE
from training.dataset import load_dataset
from training.features import feature_schema
from training.tune import fit_forest

FEATURES = [feature.as_dict() for feature in feature_schema(ColumnsConfig())]


@pytest.fixture(scope="module")
def forest_and_rows():
    dataset = load_dataset(SMALL_TABLE, Settings())
    train, test = dataset.mask(dataset.split.train), dataset.mask(dataset.split.test)
    params = {"n_estimators": 60, "max_depth": 10, "min_samples_leaf": 2}
    forest = fit_forest(params, 0, 2, dataset.X[train], dataset.y[train])
    return forest, dataset.X[test]


def test_parity_gate_passes_a_forest(forest_and_rows):
    forest, rows = forest_and_rows
    graph, report = engines.parity_gate(forest, rows, threshold=0.5)
    assert graph is not None and report.engine == engines.ONNX
    assert report.rows == len(rows)
    assert report.max_abs_diff <= engines.PARITY_TOLERANCE
    assert report.decision_mismatches == report.mismatches_near_threshold
    fast = OnnxEngine().load(graph).predict_proba(rows)
    np.testing.assert_allclose(fast, forest.predict_proba(rows)[:, 1], atol=1e-5)


def test_parity_failure_keeps_scikit_learn(forest_and_rows):
    forest, rows = forest_and_rows
    _, passed = engines.parity_gate(forest, rows, threshold=0.5)
    assert passed.max_abs_diff > 0, "float32 ONNX and float64 sums should differ in the last bits"
    graph, report = engines.parity_gate(
        forest, rows, threshold=0.5, tolerance=passed.max_abs_diff / 2
    )
    assert graph is None and report.engine == engines.SKLEARN
    assert report.reason.startswith("parity failed: max |p_onnx - p_sklearn|")


def test_conversion_failure_keeps_scikit_learn(forest_and_rows):
    _, rows = forest_and_rows

    class HandWritten:
        def predict_proba(self, matrix):
            return np.tile([0.5, 0.5], (len(matrix), 1))

    graph, report = engines.parity_gate(HandWritten(), rows, threshold=0.5)
    assert graph is None and report.engine == engines.SKLEARN
    assert report.reason.startswith("onnx build failed")


def _save(forest, rows=None) -> model_store.StoredModel:
    return model_store.save_model(
        forest,
        features=FEATURES,
        threshold=0.3,
        gate_passed=True,
        metadata={},
        parity_rows=rows,
    )


def test_saved_with_the_fast_engine_and_both_hashes(forest_and_rows):
    forest, rows = forest_and_rows
    stored = _save(forest, rows)
    assert stored.labels["engine"] == "onnx"
    assert len(stored.labels["onnx_sha256"]) == 64
    assert (stored.path / OnnxEngine.artifact).is_file() and (stored.path / ARTIFACT_FILE).is_file()
    assert stored.metadata["engine_parity"]["max_abs_diff"] <= 1e-5
    fast, slow = FraudModel.load(stored.tag), FraudModel.load(stored.tag, engine="sklearn")
    assert (fast.engine, slow.engine) == ("onnx", "sklearn")
    np.testing.assert_allclose(fast.predict_proba(rows), slow.predict_proba(rows), atol=1e-5)


def test_tampered_onnx_graph_is_refused(forest_and_rows):
    forest, rows = forest_and_rows
    stored = _save(forest, rows)
    graph = bytearray((stored.path / OnnxEngine.artifact).read_bytes())
    graph[len(graph) // 3] ^= 0x10
    (stored.path / OnnxEngine.artifact).write_bytes(bytes(graph))
    with pytest.raises(ModelIntegrityError, match="model.onnx"):
        model_store.verify(stored)
    with pytest.raises(ModelIntegrityError):
        FraudModel.load(stored.tag)


def test_without_parity_rows_the_model_keeps_scikit_learn(forest_and_rows):
    forest, _ = forest_and_rows
    stored = _save(forest)
    assert stored.labels["engine"] == "sklearn" and "onnx_sha256" not in stored.labels
    assert not (stored.path / OnnxEngine.artifact).exists()
    assert stored.metadata["engine_parity"]["reason"] == "no parity rows given"
    assert FraudModel.load(stored.tag).engine == "sklearn"


def test_fast_engine_scores_do_not_depend_on_batching(forest_and_rows):
    forest, rows = forest_and_rows
    graph, _ = engines.parity_gate(forest, rows, threshold=0.5)
    engine = OnnxEngine().load(graph)
    one_call = engine.predict_proba(rows)
    row_by_row = np.concatenate([engine.predict_proba(rows[i : i + 1]) for i in range(50)])
    np.testing.assert_array_equal(one_call[:50], row_by_row)
