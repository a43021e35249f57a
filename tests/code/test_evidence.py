"""The promotion rule and the paired bootstrap behind it."""

from __future__ import annotations

import numpy as np

from model_store.evidence import decide, figures, paired_bootstrap
from settings import PromotionConfig

RULE = PromotionConfig(min_pr_auc_gain=0.01, confidence=0.9, bootstrap_samples=200)


def _scores(seed: int, separation: float, rows: int = 3000):
    rng = np.random.default_rng(seed)
    labels = rng.random(rows) < 0.05
    return labels, np.clip(rng.normal(0.3 + separation * labels, 0.15), 0, 1)


def _evidence(champion, challenger, labels):
    return (
        figures(labels, champion, 0.5),
        figures(labels, challenger, 0.5),
        paired_bootstrap(
            labels, champion, challenger, samples=RULE.bootstrap_samples,
            margin=RULE.min_pr_auc_gain, seed=0,
        ),
    )  # fmt: skip


def test_a_clearly_better_challenger_is_promoted():
    labels, weak = _scores(0, 0.2)
    strong = np.clip(weak + 0.5 * labels, 0, 1)  # the same rows, better separated
    champion, challenger, gain = _evidence(weak, strong, labels)
    assert gain["low"] > 0 and gain["p_win"] == 1.0
    decision = decide(champion, challenger, gain, True, RULE)
    assert decision.promote and all(reason.startswith("met") for reason in decision.reasons)


def test_the_same_model_is_not_called_a_win():
    labels, scores = _scores(1, 0.4)
    champion, challenger, gain = _evidence(scores, scores.copy(), labels)
    assert gain["mean"] == 0 and gain["p_win"] == 0.0
    decision = decide(champion, challenger, gain, True, RULE)
    assert not decision.promote
    assert any("NOT met: PR-AUC" in reason for reason in decision.reasons)


def test_a_tiny_noisy_gain_is_not_enough():
    labels, scores = _scores(2, 0.3, rows=400)  # ~20 frauds: a small gain is within the noise
    noisy = np.clip(scores + np.random.default_rng(3).normal(0, 0.02, len(scores)), 0, 1)
    champion, challenger, gain = _evidence(scores, noisy, labels)
    decision = decide(champion, challenger, gain, True, RULE)
    assert not decision.promote and gain["p_win"] < RULE.confidence


def test_a_challenger_that_failed_its_gate_is_not_promoted():
    labels, weak = _scores(4, 0.2)
    strong = np.clip(weak + 0.5 * labels, 0, 1)
    decision = decide(*_evidence(weak, strong, labels), False, RULE)
    assert not decision.promote
    assert decision.reasons[0].startswith("NOT met: the challenger passed its evaluation gate")
