"""Evidence for replacing a model: two models' figures on the same labelled rows, a paired
bootstrap of their difference, and the promotion rule that reads them.

Offline (`python -m training retrain`) the rows are the most recent labelled window of the new
data; live (`python -m model_store compare`) they are the logged predictions that got labels.
A difference is called a win only when it is larger than the rule's margin in enough paired
resamples, so a tiny gap on a few frauds does not replace a model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from settings import PromotionConfig


def figures(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC-AUC, PR-AUC and precision/recall at the model's own threshold (NaN when undefined)."""
    labels = np.asarray(labels, dtype=bool)
    decisions = np.asarray(scores) >= threshold
    both = 0 < labels.sum() < len(labels)
    hits, flagged, frauds = int((labels & decisions).sum()), int(decisions.sum()), int(labels.sum())
    return {
        "rows": len(labels),
        "frauds": frauds,
        "roc_auc": float(roc_auc_score(labels, scores)) if both else math.nan,
        "pr_auc": float(average_precision_score(labels, scores)) if both else math.nan,
        "precision": hits / flagged if flagged else math.nan,
        "recall": hits / frauds if frauds else math.nan,
        "threshold": threshold,
    }


def paired_bootstrap(
    labels: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    *,
    samples: int,
    margin: float,
    seed: int,
) -> dict[str, float]:
    """The challenger's PR-AUC gain over the champion: its mean and 95% interval over paired
    resamples of the rows, and the share of resamples where the gain exceeds `margin`."""
    labels = np.asarray(labels, dtype=bool)
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(samples):
        rows = rng.integers(0, len(labels), len(labels))
        if not 0 < labels[rows].sum() < len(rows):
            continue
        gains.append(
            average_precision_score(labels[rows], challenger[rows])
            - average_precision_score(labels[rows], champion[rows])
        )
    gains = np.array(gains)
    if not len(gains):
        return {"resamples": 0, "mean": math.nan, "low": math.nan, "high": math.nan, "p_win": 0.0}
    return {
        "resamples": len(gains),
        "mean": float(gains.mean()),
        "low": float(np.quantile(gains, 0.025)),
        "high": float(np.quantile(gains, 0.975)),
        "p_win": float((gains > margin).mean()),
    }


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        verdict = "promote" if self.promote else "keep the champion"
        return f"{verdict}: {'; '.join(self.reasons)}"


def decide(
    champion: dict[str, float],
    challenger: dict[str, float],
    bootstrap: dict[str, float],
    challenger_gate_passed: bool,
    rule: PromotionConfig,
) -> Decision:
    """The promotion rule: the challenger passed its gate, its PR-AUC is at least the
    champion's plus `rule.min_pr_auc_gain`, and it beat that in at least `rule.confidence` of
    the paired resamples. Every reason, met or not, is said."""
    gain = challenger["pr_auc"] - champion["pr_auc"]
    checks = [
        (challenger_gate_passed, "the challenger passed its evaluation gate"),
        (
            gain >= rule.min_pr_auc_gain,
            f"PR-AUC {challenger['pr_auc']:.4f} vs {champion['pr_auc']:.4f}: gain {gain:+.4f}, "
            f"the rule asks {rule.min_pr_auc_gain:+.4f}",
        ),
        (
            bootstrap["p_win"] >= rule.confidence,
            f"the gain exceeded the margin in {bootstrap['p_win']:.1%} of "
            f"{bootstrap['resamples']} paired resamples, the rule asks {rule.confidence:.0%}",
        ),
    ]
    reasons = [("met: " if ok else "NOT met: ") + text for ok, text in checks]
    return Decision(all(ok for ok, _ in checks), reasons)
