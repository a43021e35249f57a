"""Inference engines for a stored forest: scikit-learn itself, or ONNX Runtime behind a parity gate.

The ONNX graph is made once, at save time, and kept beside the scikit-learn artifact only if it
reproduces scikit-learn's probabilities on the given rows; otherwise the model is saved with the
scikit-learn engine alone and the reason is recorded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SKLEARN = "sklearn"
ONNX = "onnx"
PARITY_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ParityReport:
    engine: str  # the engine the model is saved with
    reason: str
    rows: int = 0
    max_abs_diff: float | None = None
    decision_mismatches: int = 0
    mismatches_near_threshold: int = 0

    def as_metadata(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


class OnnxForest:
    """An ONNX Runtime session over the converted forest: fraud probabilities of float32 rows."""

    def __init__(self, graph: bytes, intra_op_threads: int = 1):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        # Pool threads spin while waiting for work by default: on a core shared with the
        # event loop that spinning is stolen time. (One thread, the default, has no pool.)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(
            graph, options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._probabilities = [self._session.get_outputs()[1].name]

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        (probabilities,) = self._session.run(self._probabilities, {self._input: matrix})
        return probabilities[:, 1]


def to_onnx(estimator: Any, n_features: int) -> bytes:
    from skl2onnx import to_onnx as convert

    sample = np.zeros((1, n_features), dtype=np.float32)
    graph = convert(estimator, sample, options={id(estimator): {"zipmap": False}})
    return graph.SerializeToString()


def parity_gate(
    estimator: Any,
    rows: np.ndarray,
    threshold: float,
    tolerance: float = PARITY_TOLERANCE,
) -> tuple[bytes | None, ParityReport]:
    """The ONNX graph and its report when it matches scikit-learn on `rows`, else (None, why)."""
    try:
        graph = to_onnx(estimator, rows.shape[1])
        fast = OnnxForest(graph).predict_proba(rows)
    except Exception as error:  # noqa: BLE001 - any conversion failure means: keep scikit-learn
        return None, ParityReport(
            SKLEARN, f"ONNX conversion failed: {type(error).__name__}: {error}"
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
        reason = f"parity failed: max |p_onnx - p_sklearn| {diff.max():.3g} > {tolerance:g}"
        return None, ParityReport(SKLEARN, reason, **report)
    if (mismatched & ~near).any():
        reason = f"parity failed: {int((mismatched & ~near).sum())} decisions differ"
        return None, ParityReport(SKLEARN, reason, **report)
    return graph, ParityReport(ONNX, f"parity passed within {tolerance:g}", **report)
