"""Inference engines for a stored forest: scikit-learn itself, or the registered engines (the
forest compiled to native code, model_store/native_engine.py; ONNX Runtime,
model_store/onnx_engine.py), each behind a parity gate.

An engine's artifact is made once, at save time, and kept beside the scikit-learn artifact only
if it reproduces scikit-learn's probabilities on the given rows; an engine that fails its gate
or cannot be built is left out and the reason is recorded. The engines kept are ranked by their
cost on a batch, measured then; a model is served by the first of them that loads.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from model_store.native_engine import Tl2cgenEngine
from model_store.onnx_engine import OnnxEngine

SKLEARN = "sklearn"
# Between the names of the engines a model keeps, in its `engine` label ("onnx+tl2cgen").
SEPARATOR = "+"


@dataclass(frozen=True)
class ParityReport:
    engine: str  # the engine checked
    passed: bool
    reason: str
    rows: int = 0
    max_abs_diff: float | None = None
    decision_mismatches: int = 0
    mismatches_near_threshold: int = 0
    us_per_row: float | None = None  # scoring COST_BATCH rows in one call, when it passed

    def as_metadata(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


class Forest(Protocol):
    """A loaded engine: fraud probabilities (float32) of float32 feature rows."""

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray: ...


class Engine(Protocol):
    """A faster way to score a stored forest: made from the estimator when the model is saved,
    kept beside it (`artifact`, hashed into the label `<name>_sha256`) only if it passes the
    parity gate within its `tolerance`, loaded from those verified bytes when served."""

    name: str
    artifact: str
    tolerance: float

    def build(self, estimator: Any, n_features: int) -> bytes: ...

    def load(self, artifact: bytes, threads: int = 1) -> Forest: ...


# The engines a model is saved with; a new engine is its own module and one entry here. Which
# serves is measured per model at save time (ops/bench/engines.py, two forests): native code
# wins at every batch size on the default forest (1.9x at 100 rows), but on a forest of 200
# trees of depth 14 it loses at 100 rows and more, where ONNX Runtime's tree-at-a-time walk
# keeps the nodes in cache. The cost of a batch of COST_BATCH rows ranks them (throughput is
# what a busy server runs out of); the other engine stays as the one to fall back on.
ENGINES: dict[str, Engine] = {engine.name: engine for engine in (Tl2cgenEngine(), OnnxEngine())}
COST_BATCH = 100
NATIVE = Tl2cgenEngine.name
ONNX = OnnxEngine.name
PARITY_TOLERANCE = max(engine.tolerance for engine in ENGINES.values())


class SklearnForest:
    """The stored forest scored by scikit-learn itself (float64 sums, answered in float32)."""

    def __init__(self, estimator: Any):
        self.estimator = estimator

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        return self.estimator.predict_proba(matrix)[:, 1].astype(np.float32)


def artifact_label(engine: Engine) -> str:
    return f"{engine.name}_sha256"


def parity_gate(
    estimator: Any,
    rows: np.ndarray,
    threshold: float,
    engine: Engine | None = None,
    tolerance: float | None = None,
) -> tuple[bytes | None, ParityReport]:
    """The engine's artifact and its report when it matches scikit-learn on `rows`, else
    (None, why). By default the first engine registered, within its own tolerance."""
    engine = engine or next(iter(ENGINES.values()))
    tolerance = engine.tolerance if tolerance is None else tolerance
    try:
        artifact = engine.build(estimator, rows.shape[1])
        forest = engine.load(artifact)
        fast = forest.predict_proba(rows)
    except Exception as error:  # noqa: BLE001 - any build failure means: keep scikit-learn
        return None, ParityReport(
            engine.name, False, f"build failed: {type(error).__name__}: {error}"
        )
    reference = estimator.predict_proba(rows)[:, 1]
    diff = np.abs(fast - reference)
    mismatched = (fast >= threshold) != (reference >= threshold)
    near = np.abs(reference - threshold) <= tolerance
    report = {
        "rows": len(rows),
        "max_abs_diff": float(diff.max()),
        "decision_mismatches": int(mismatched.sum()),
        "mismatches_near_threshold": int((mismatched & near).sum()),
    }
    if diff.max() > tolerance:
        reason = (
            f"parity failed: max |p_{engine.name} - p_sklearn| {diff.max():.3g} > {tolerance:g}"
        )
        return None, ParityReport(engine.name, False, reason, **report)
    if (mismatched & ~near).any():
        reason = f"parity failed: {int((mismatched & ~near).sum())} decisions differ"
        return None, ParityReport(engine.name, False, reason, **report)
    return artifact, ParityReport(
        engine.name,
        True,
        f"parity passed within {tolerance:g}",
        us_per_row=batch_cost_us(forest, rows),
        **report,
    )


def batch_cost_us(forest: Forest, rows: np.ndarray, repeats: int = 5, calls: int = 20) -> float:
    """Microseconds a row to score a batch of COST_BATCH rows in one call, best of `repeats`."""
    batch = np.ascontiguousarray(np.resize(rows, (COST_BATCH, rows.shape[1])), dtype=np.float32)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            forest.predict_proba(batch)
        best = min(best, (time.perf_counter() - started) / calls)
    return round(1e6 * best / COST_BATCH, 3)


def build_engines(
    estimator: Any, rows: np.ndarray, threshold: float
) -> tuple[dict[str, bytes], dict[str, ParityReport]]:
    """The artifacts of the engines that pass their gates, cheapest first by their measured
    batch cost (the served engine is the first that loads), and every engine's report."""
    passed, reports = {}, {}
    for engine in ENGINES.values():
        artifact, reports[engine.name] = parity_gate(estimator, rows, threshold, engine)
        if artifact is not None:
            passed[engine.name] = artifact
    ranked = sorted(passed, key=lambda name: reports[name].us_per_row)
    return {name: passed[name] for name in ranked}, reports
