"""An HTML drift report: the per-feature table and reference-vs-current distribution plots."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from monitoring import whylogs_adapter as profiles  # noqa: E402
from monitoring.drift import DRIFT, FeatureDrift  # noqa: E402

QUANTILES = np.linspace(0.0, 1.0, 101)


def _cdf_plot(feature: str, reference, current) -> str:
    """A PNG (base64) of both empirical CDFs, read from the profiles' quantile sketches."""
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for label, view in (("reference", reference), ("current", current)):
        sketch = profiles.quantile_sketch(view, feature)
        if sketch is not None:
            ax.plot(sketch.get_quantiles(QUANTILES), QUANTILES, label=label)
    ax.set(title=feature, xlabel="value", ylabel="cumulative share")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def render(title: str, report: list[FeatureDrift], reference, current) -> str:
    rows = "\n".join(
        f"<tr class='{'drift' if r.category == DRIFT else ''}'><td>{html.escape(r.feature)}</td>"
        f"<td>{r.test}</td><td>{r.statistic:.4f}</td><td>{r.p_value:.3g}</td>"
        f"<td>{r.category}</td><td>{r.reference_rows}</td><td>{r.current_rows}</td></tr>"
        for r in report
    )
    plots = "\n".join(
        f"<img alt='{html.escape(r.feature)}' src='data:image/png;base64,"
        f"{_cdf_plot(r.feature, reference, current)}'>"
        for r in report
        if r.test == "ks"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px}} tr.drift{{background:#fdd}}</style>
</head><body><h1>{html.escape(title)}</h1>
<table><tr><th>feature</th><th>test</th><th>statistic</th><th>p-value</th><th>category</th>
<th>reference rows</th><th>current rows</th></tr>
{rows}
</table>
<h2>Reference and current distributions</h2>
{plots}
</body></html>
"""
