"""ONNX Runtime over the forest converted by skl2onnx: the engine served when the forest compiled
to native code cannot be (model_store/engines.py)."""

from __future__ import annotations

from typing import Any

import numpy as np


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


class OnnxEngine:
    """Built at save time (`zipmap=False`: probabilities as one float32 array, not a list of
    dicts), loaded from the hash-verified graph."""

    name = "onnx"
    artifact = "model.onnx"
    tolerance = 1e-5  # |p_onnx - p_sklearn| on held-out rows: float32 thresholds in the trees

    def build(self, estimator: Any, n_features: int) -> bytes:
        from skl2onnx import to_onnx as convert

        sample = np.zeros((1, n_features), dtype=np.float32)
        graph = convert(estimator, sample, options={id(estimator): {"zipmap": False}})
        return graph.SerializeToString()

    def load(self, artifact: bytes, threads: int = 1) -> OnnxForest:
        return OnnxForest(artifact, threads)
