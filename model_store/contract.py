"""The model's input contract: its ordered features, each with a type and a range.

One type, owned here because it is the model's: training builds it (training/features.py), the
store keeps it in the model's metadata and hashes it into the `feature_hash` label, and every
request form the service accepts is derived from it (serving/contract/rules.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# The model computes in float32: a larger magnitude would become infinite.
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str
    minimum: float | None
    maximum: float | None
    description: str = ""

    @property
    def integral(self) -> bool:
        """Integer-valued (counts and 0/1 flags): a request must send it as an integer."""
        return self.dtype.startswith("int")

    @property
    def bounds(self) -> tuple[float, float]:
        """The accepted range: the documented one, within float32's for real-valued features."""
        if self.integral:
            low = -np.inf if self.minimum is None else self.minimum
            high = np.inf if self.maximum is None else self.maximum
            return low, high
        low = -FLOAT32_MAX if self.minimum is None else max(self.minimum, -FLOAT32_MAX)
        high = FLOAT32_MAX if self.maximum is None else min(self.maximum, FLOAT32_MAX)
        return low, high

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> Feature:
        return cls(
            name=entry["name"],
            dtype=entry["dtype"],
            minimum=entry.get("minimum"),
            maximum=entry.get("maximum"),
            description=entry.get("description", ""),
        )


@dataclass(frozen=True)
class FeatureSchema:
    """The model's inputs, in the order its matrix columns take them."""

    features: tuple[Feature, ...]

    @classmethod
    def from_metadata(cls, entries: list[dict[str, Any]]) -> FeatureSchema:
        return cls(tuple(Feature.from_dict(entry) for entry in entries))

    def as_metadata(self) -> list[dict[str, Any]]:
        return [feature.as_dict() for feature in self.features]

    @property
    def names(self) -> list[str]:
        return [feature.name for feature in self.features]

    def __len__(self) -> int:
        return len(self.features)

    def __iter__(self):
        return iter(self.features)
