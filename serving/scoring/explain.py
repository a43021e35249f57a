"""SHAP explanations of the served forest (TreeExplainer on the same scikit-learn model)."""

from __future__ import annotations

import threading

import numpy as np

from serving.contract import schema
from serving.scoring.runtime import FraudModel


class Explainer:
    def __init__(self, model: FraudModel):
        self._model = model
        self._explainer = None
        self._lock = threading.Lock()

    def _tree_explainer(self):
        with self._lock:
            if self._explainer is None:
                import shap  # imported on first use: it adds seconds to start-up

                self._explainer = shap.TreeExplainer(self._model.estimator)
            return self._explainer

    def explain(self, matrix: np.ndarray) -> tuple[np.ndarray, float]:
        """Per-row, per-feature contributions to the fraud probability, and the base value."""
        explainer = self._tree_explainer()
        values = np.asarray(explainer.shap_values(matrix, check_additivity=False))
        if values.ndim == 3:  # [rows, features, classes]
            values = values[..., 1]
        base = np.atleast_1d(explainer.expected_value)
        return values, float(base[-1])

    def explanations(
        self, matrix: np.ndarray, ids: list, probabilities: np.ndarray, top_k: int
    ) -> list[schema.Explanation]:
        """Each row's `top_k` largest contributions by size, with the features' values."""
        values, base = self.explain(matrix)
        names = self._model.feature_names
        explanations = []
        for transaction_id, probability, contributions, features in zip(
            ids, probabilities, values, matrix, strict=True
        ):
            top = np.argsort(-np.abs(contributions))[:top_k]
            explanations.append(
                schema.Explanation(
                    transaction_id=transaction_id,
                    fraud_probability=float(probability),
                    base_value=base,
                    contributions=[
                        schema.Contribution(
                            feature=names[i], value=float(features[i]), shap=float(contributions[i])
                        )
                        for i in top
                    ],
                )
            )
        return explanations
