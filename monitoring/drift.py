"""Per-feature drift between a reference profile and a current one.

Numeric columns: a two-sample Kolmogorov-Smirnov test evaluated on the profiles' quantile
sketches (scipy for the distribution of the statistic); string columns: a chi-square test on
their frequent items. With the thousands of rows a window holds, a p-value alone flags
differences too small to matter, so a feature drifts only when the test is significant *and*
the effect (KS distance, or Cramér's V) is at least `min_effect`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from monitoring import whylogs_adapter as profiles

NO_DRIFT, POSSIBLE_DRIFT, DRIFT = "NO_DRIFT", "POSSIBLE_DRIFT", "DRIFT"
QUANTILES = np.linspace(0.0, 1.0, 201)


@dataclass(frozen=True)
class Thresholds:
    p_value: float = 0.01
    min_effect: float = 0.1

    @property
    def min_rows(self) -> int:
        """The fewest rows a window needs to be judged: with fewer, even a KS distance of
        `min_effect` is not significant at `p_value`, so any flag would be noise (a window of
        43 rows once flagged 16 features). 262 rows with the defaults."""
        rows = 1
        while stats.kstwo.sf(self.min_effect, rows) >= self.p_value:
            rows *= 2
        low = rows // 2
        while low + 1 < rows:
            middle = (low + rows) // 2
            if stats.kstwo.sf(self.min_effect, middle) >= self.p_value:
                low = middle
            else:
                rows = middle
        return rows


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    test: str
    statistic: float
    p_value: float
    category: str
    reference_rows: int
    current_rows: int

    def as_dict(self) -> dict:
        return asdict(self)


def ks_test(reference, current) -> tuple[float, float]:
    """KS distance and p-value of two KLL sketches."""
    points = np.unique(
        np.concatenate([reference.get_quantiles(QUANTILES), current.get_quantiles(QUANTILES)])
    )
    distance = float(
        np.max(np.abs(np.array(reference.get_cdf(points)) - np.array(current.get_cdf(points))))
    )
    n, m = reference.get_n(), current.get_n()
    effective = max(1, round(n * m / (n + m)))
    return distance, float(stats.kstwo.sf(distance, effective))


def chi_square_test(reference: dict[str, int], current: dict[str, int]) -> tuple[float, float]:
    """Cramér's V and the chi-square p-value of two category counts."""
    categories = sorted(set(reference) | set(current))
    table = np.array(
        [[reference.get(c, 0) for c in categories], [current.get(c, 0) for c in categories]]
    )
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    chi2, p_value, _, _ = stats.chi2_contingency(table)
    cramers_v = float(np.sqrt(chi2 / (table.sum() * (min(table.shape) - 1))))
    return cramers_v, float(p_value)


def _category(statistic: float, p_value: float, thresholds: Thresholds) -> str:
    if p_value >= thresholds.p_value:
        return NO_DRIFT
    return DRIFT if statistic >= thresholds.min_effect else POSSIBLE_DRIFT


def compare(
    reference: profiles.ProfileView,
    current: profiles.ProfileView,
    features: list[str],
    thresholds: Thresholds,
) -> list[FeatureDrift]:
    """Drift of each feature present in both profiles."""
    present = set(profiles.columns(reference)) & set(profiles.columns(current))
    report = []
    for feature in (f for f in features if f in present):
        ref_sketch = profiles.quantile_sketch(reference, feature)
        cur_sketch = profiles.quantile_sketch(current, feature)
        if ref_sketch is not None and cur_sketch is not None:
            test, (statistic, p_value) = "ks", ks_test(ref_sketch, cur_sketch)
        else:
            test = "chi_square"
            statistic, p_value = chi_square_test(
                profiles.frequent_strings(reference, feature),
                profiles.frequent_strings(current, feature),
            )
        report.append(
            FeatureDrift(
                feature=feature,
                test=test,
                statistic=statistic,
                p_value=p_value,
                category=_category(statistic, p_value, thresholds),
                reference_rows=profiles.count(reference, feature),
                current_rows=profiles.count(current, feature),
            )
        )
    return report
