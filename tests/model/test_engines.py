"""The fast engines (the forest compiled to native code, ONNX Runtime) behind parity gates, the
first that loads serving, and scikit-learn as the last fallback."""

from __future__ import annotations

import os

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

import model_store
from model_store import ModelIntegrityError, engines
from model_store.native_engine import Tl2cgenEngine
from model_store.onnx_engine import OnnxEngine
from model_store.store import ARTIFACT_FILE
from serving.scoring.runtime import FraudModel
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
    graph, report = engines.parity_gate(forest, rows, 0.5, engines.ENGINES[engines.ONNX])
    assert graph is not None and report.engine == engines.ONNX and report.passed
    assert report.rows == len(rows)
    assert report.max_abs_diff <= engines.PARITY_TOLERANCE
    assert report.decision_mismatches == report.mismatches_near_threshold
    fast = OnnxEngine().load(graph).predict_proba(rows)
    np.testing.assert_allclose(fast, forest.predict_proba(rows)[:, 1], atol=1e-5)


def test_parity_failure_keeps_scikit_learn(forest_and_rows):
    forest, rows = forest_and_rows
    onnx = engines.ENGINES[engines.ONNX]
    _, passed = engines.parity_gate(forest, rows, 0.5, onnx)
    assert passed.max_abs_diff > 0, "float32 ONNX and float64 sums should differ in the last bits"
    graph, report = engines.parity_gate(forest, rows, 0.5, onnx, tolerance=passed.max_abs_diff / 2)
    assert graph is None and not report.passed
    assert report.reason.startswith("parity failed: max |p_onnx - p_sklearn|")


def test_conversion_failure_keeps_scikit_learn(forest_and_rows):
    _, rows = forest_and_rows

    class HandWritten:
        def predict_proba(self, matrix):
            return np.tile([0.5, 0.5], (len(matrix), 1))

    for engine in engines.ENGINES.values():
        graph, report = engines.parity_gate(HandWritten(), rows, threshold=0.5, engine=engine)
        assert graph is None and (report.engine, report.passed) == (engine.name, False)
        assert report.reason.startswith("build failed")


def _save(forest, rows=None) -> model_store.StoredModel:
    return model_store.save_model(
        forest,
        features=FEATURES,
        threshold=0.3,
        gate_passed=True,
        metadata={},
        parity_rows=rows,
    )


def test_the_native_library_passes_its_gate_with_scikit_learns_sums(forest_and_rows):
    """Float64 sums like scikit-learn's: its answers are scikit-learn's probabilities rounded to
    float32, at every batch size."""
    forest, rows = forest_and_rows
    library, report = engines.parity_gate(forest, rows, 0.5, engines.ENGINES[engines.NATIVE])
    assert library is not None and report.passed and report.decision_mismatches == 0
    native = Tl2cgenEngine().load(library)
    reference = forest.predict_proba(rows)[:, 1].astype(np.float32)
    np.testing.assert_array_equal(native.predict_proba(rows), reference)
    row_by_row = np.concatenate([native.predict_proba(rows[i : i + 1]) for i in range(50)])
    np.testing.assert_array_equal(row_by_row, reference[:50])
    with pytest.raises(ValueError, match="rows of 18 features expected"):
        native.predict_proba(rows[:, :5])


def test_saved_with_both_engines_ranked_by_their_measured_cost(forest_and_rows):
    forest, rows = forest_and_rows
    stored = _save(forest, rows)
    ranked = stored.labels["engine"].split("+")
    assert sorted(ranked) == ["onnx", "tl2cgen"]
    assert len(stored.labels["onnx_sha256"]) == len(stored.labels["tl2cgen_sha256"]) == 64
    for artifact in (OnnxEngine.artifact, Tl2cgenEngine.artifact, ARTIFACT_FILE):
        assert (stored.path / artifact).is_file()
    checks = stored.metadata["engine_parity"]
    assert all(checks[name]["max_abs_diff"] <= 1e-5 for name in ranked)
    costs = [checks[name]["us_per_row"] for name in ranked]
    assert costs == sorted(costs) and costs[0] > 0
    served = FraudModel.load(stored.tag)
    native, onnx = (FraudModel.load(stored.tag, engine=name) for name in ("tl2cgen", "onnx"))
    slow = FraudModel.load(stored.tag, engine="sklearn")
    assert served.engine == ranked[0]
    assert (native.engine, onnx.engine, slow.engine) == ("tl2cgen", "onnx", "sklearn")
    np.testing.assert_array_equal(native.predict_proba(rows), slow.predict_proba(rows))
    np.testing.assert_allclose(onnx.predict_proba(rows), slow.predict_proba(rows), atol=1e-5)


def test_without_a_compiler_the_model_is_saved_with_onnx_and_the_reason(
    forest_and_rows, tmp_path, monkeypatch
):
    forest, rows = forest_and_rows
    monkeypatch.setenv("PATH", str(tmp_path))  # no gcc on it
    stored = _save(forest, rows)
    assert stored.labels["engine"] == "onnx" and "tl2cgen_sha256" not in stored.labels
    assert not (stored.path / Tl2cgenEngine.artifact).exists()
    report = stored.metadata["engine_parity"]["tl2cgen"]
    assert report["passed"] is False and report["reason"].startswith("build failed")
    assert "gcc" in report["reason"]
    assert FraudModel.load(stored.tag).engine == "onnx"


def test_two_libraries_in_one_process_each_score_their_own_forest(forest_and_rows):
    """A champion and its challenger, loaded one after the other in one worker."""
    forest, rows = forest_and_rows
    other = RandomForestClassifier(n_estimators=3, max_depth=2, random_state=1)
    other.fit(rows[:500], (rows[:500, 0] > np.median(rows[:500, 0])).astype(int))
    first = Tl2cgenEngine().load(Tl2cgenEngine().build(forest, rows.shape[1]))
    second = Tl2cgenEngine().load(Tl2cgenEngine().build(other, rows.shape[1]))
    for native, model in ((first, forest), (second, other)):
        expected = model.predict_proba(rows[:100])[:, 1].astype(np.float32)
        np.testing.assert_array_equal(native.predict_proba(rows[:100]), expected)


def test_a_library_for_another_platform_is_refused_by_the_loader(forest_and_rows):
    forest, rows = forest_and_rows
    library = bytearray(Tl2cgenEngine().build(forest, rows.shape[1]))
    library[18:20] = (183).to_bytes(2, "little")  # ELF e_machine: AArch64
    with pytest.raises(OSError, match="cannot open shared object"):
        Tl2cgenEngine().load(bytes(library))


def test_an_engine_that_cannot_be_loaded_is_passed_over_with_the_reason(
    forest_and_rows, monkeypatch
):
    """A host without in-memory files: the native library cannot be loaded, the reason is
    kept, and the model's other engine serves (scikit-learn when it was the only one asked)."""
    forest, rows = forest_and_rows
    stored = _save(forest, rows)
    monkeypatch.delattr(os, "memfd_create")
    asked = FraudModel.load(stored.tag, engine="tl2cgen")
    assert asked.engine == "sklearn"
    assert asked.forest.fallbacks["tl2cgen"].startswith("cannot be loaded: AttributeError")
    served = FraudModel.load(stored.tag)
    assert served.engine == "onnx"
    reference = forest.predict_proba(rows)[:, 1]
    np.testing.assert_allclose(served.predict_proba(rows), reference, atol=1e-5)


@pytest.mark.parametrize("artifact", [OnnxEngine.artifact, Tl2cgenEngine.artifact])
def test_a_tampered_engine_artifact_refuses_the_model(forest_and_rows, artifact):
    """Whether or not that engine would serve: a tampered file is never passed over."""
    forest, rows = forest_and_rows
    stored = _save(forest, rows)
    payload = bytearray((stored.path / artifact).read_bytes())
    payload[len(payload) // 3] ^= 0x10
    (stored.path / artifact).write_bytes(bytes(payload))
    with pytest.raises(ModelIntegrityError, match=artifact):
        model_store.verify(stored)
    with pytest.raises(ModelIntegrityError, match=artifact):
        FraudModel.load(stored.tag)


def test_without_parity_rows_the_model_keeps_scikit_learn(forest_and_rows):
    forest, _ = forest_and_rows
    stored = _save(forest)
    assert stored.labels["engine"] == "sklearn" and "onnx_sha256" not in stored.labels
    assert not (stored.path / OnnxEngine.artifact).exists()
    for report in stored.metadata["engine_parity"].values():
        assert report["reason"] == "no parity rows given"
    assert FraudModel.load(stored.tag).engine == "sklearn"


def test_onnx_scores_do_not_depend_on_batching(forest_and_rows):
    forest, rows = forest_and_rows
    graph, _ = engines.parity_gate(forest, rows, 0.5, engines.ENGINES[engines.ONNX])
    engine = OnnxEngine().load(graph)
    one_call = engine.predict_proba(rows)
    row_by_row = np.concatenate([engine.predict_proba(rows[i : i + 1]) for i in range(50)])
    np.testing.assert_array_equal(one_call[:50], row_by_row)
