"""The one module that imports whylogs: profiling tables, (de)serialising and merging profiles,
and reading a column's sketches.

whylogs 1.6.4 is its final release, and on NumPy 2 it fails on any string column because it
refers to `np.unicode_`, which NumPy 2 removed; the alias below is the whole compatibility fix.
"""

from __future__ import annotations

import os

import numpy as np

# whylogs reports usage to its vendor unless told not to: a network call from a service that
# must not make any (and, unanswered here, a log line each time).
os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

if not hasattr(np, "unicode_"):
    np.unicode_ = np.str_  # whylogs 1.6.4 checks string dtypes against it

import pandas as pd  # noqa: E402
import whylogs  # noqa: E402
from whylogs.core import DatasetProfileView  # noqa: E402

ProfileView = DatasetProfileView


def profile(frame: pd.DataFrame) -> ProfileView:
    return whylogs.log(frame).view()


def to_bytes(view: ProfileView) -> bytes:
    return view.serialize()


def from_bytes(payload: bytes) -> ProfileView:
    return DatasetProfileView.deserialize(payload)


def merge(views: list[ProfileView]) -> ProfileView:
    merged = views[0]
    for view in views[1:]:
        merged = merged.merge(view)
    return merged


def columns(view: ProfileView) -> list[str]:
    return list(view.get_columns())


def count(view: ProfileView, column: str) -> int:
    return int(view.get_column(column).get_metric("counts").n.value)


def quantile_sketch(view: ProfileView, column: str):
    """The column's KLL sketch (get_n, get_quantiles, get_cdf), or None for non-numeric columns."""
    metric = view.get_column(column).get_metric("distribution")
    sketch = metric.kll.value if metric is not None else None
    return sketch if sketch is not None and sketch.get_n() > 0 else None


def frequent_strings(view: ProfileView, column: str) -> dict[str, int]:
    metric = view.get_column(column).get_metric("frequent_items")
    if metric is None:
        return {}
    return {item.value: int(item.est) for item in metric.to_summary_dict()["frequent_strings"]}
