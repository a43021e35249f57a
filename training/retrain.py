"""Retraining: a challenger trained on the latest data, compared with the champion on the same
most recent labelled window, and promoted only when the rule in the settings holds.

The champion's test figures come from older data and do not compare; both models are scored on
the new table's last `split.test_days` (after the label delay), which neither was trained on:
the challenger's training ends before it by construction, and a champion whose training window
reaches into it is refused. Every decision goes to the promotion log with its figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import model_store
from model_store import evidence
from settings import Settings
from training import report
from training.dataset import load_dataset
from training.features import feature_names
from training.train import run_training
from training.tune import stored_params


@dataclass(frozen=True)
class RetrainResult:
    run_dir: Path
    champion: str
    challenger: str
    decision: evidence.Decision
    promoted: bool
    comparison: dict


def _champion(settings: Settings, tag: str | None) -> str:
    tag = tag or model_store.current(settings.store.pin_file)
    if not tag:
        raise model_store.ModelNotFoundError(
            f"no champion: nothing is pinned in {settings.store.pin_file}; give --champion TAG"
        )
    return tag


def run_retrain(
    settings: Settings,
    data_path: str | Path | None,
    *,
    champion_tag: str | None = None,
    promote: bool = False,
) -> RetrainResult:
    champion_tag = _champion(settings, champion_tag)
    stored, champion = model_store.load(champion_tag)
    names = feature_names(settings.columns)
    if [feature["name"] for feature in stored.features] != names:
        raise ValueError(
            f"{stored.tag} takes other features than these settings build ({len(names)}): "
            "retrain with the settings (columns, extra_features) it was trained with"
        )
    dataset = load_dataset(data_path, settings, latest=True)
    window = dataset.split.test
    champion_trained_until = pd.Timestamp(stored.metadata["train_window"]["end"])
    if champion_trained_until > window.start:
        raise ValueError(
            f"{stored.tag} was trained on data up to {champion_trained_until.date()}, inside the "
            f"comparison window from {window.start.date()}: retrain on newer data"
        )
    trained = run_training(
        settings, data_path, dataset=dataset, warm_start=stored_params(stored.metadata["params"])
    )
    challenger_stored, challenger = model_store.load(trained.tag)

    rows = dataset.mask(window)
    labels, X = dataset.y[rows], dataset.X[rows]
    scores = {
        "champion": champion.predict_proba(X)[:, 1],
        "challenger": challenger.predict_proba(X)[:, 1],
    }
    figures = {
        "champion": evidence.figures(labels, scores["champion"], stored.threshold),
        "challenger": evidence.figures(labels, scores["challenger"], challenger_stored.threshold),
    }
    rule = settings.promotion
    bootstrap = evidence.paired_bootstrap(
        labels,
        scores["champion"],
        scores["challenger"],
        samples=rule.bootstrap_samples,
        margin=rule.min_pr_auc_gain,
        seed=settings.seed,
    )
    decision = evidence.decide(
        figures["champion"], figures["challenger"], bootstrap, trained.gate_passed, rule
    )
    comparison = {
        "window": window.as_dict(),
        "champion": {"tag": stored.tag, **figures["champion"]},
        "challenger": {"tag": trained.tag, **figures["challenger"]},
        "pr_auc_gain": bootstrap,
        "rule": rule.model_dump(),
        "decision": decision.as_dict(),
    }
    _report(trained.run_dir, labels, scores, comparison)
    promoted = promote and decision.promote
    files = {"pin_file": settings.store.pin_file, "log_file": settings.store.promotion_log}
    if promoted:
        model_store.promote(
            trained.tag, **files, reason=f"retrained in run {trained.run_dir.name}",
            evidence=comparison,
        )  # fmt: skip
    else:
        why = str(decision) if not decision.promote else "not asked to promote (--promote)"
        model_store.decline(trained.tag, **files, reason=why, evidence=comparison)
    print(
        f"champion {stored.tag} vs challenger {trained.tag} on {window.start.date()} to "
        f"{window.end.date()} ({len(labels)} rows, {int(labels.sum())} frauds): {decision}"
    )
    if promoted:
        print(f"promoted {trained.tag} (was {stored.tag})")
    elif decision.promote:
        print(f"the rule holds; not promoted without --promote: {stored.tag} stays the champion")
    else:
        print(f"not promoted: {stored.tag} stays the champion")
    return RetrainResult(trained.run_dir, stored.tag, trained.tag, decision, promoted, comparison)


def _report(run_dir: Path, labels: np.ndarray, scores: dict, comparison: dict) -> None:
    report.write_json(run_dir / "comparison.json", comparison)
    images = report.plot_comparison(run_dir, labels, scores)
    champion, challenger = comparison["champion"], comparison["challenger"]
    gain = comparison["pr_auc_gain"]
    lines = [
        "",
        "## Champion vs challenger on the most recent labelled window",
        "",
        f"{comparison['window']['start']} to {comparison['window']['end']}: "
        f"{champion['rows']} rows, {champion['frauds']} frauds.",
        "",
        "| model | ROC-AUC | PR-AUC | precision | recall | threshold |",
        "|---|---|---|---|---|---|",
    ]
    for role, figures in (("champion", champion), ("challenger", challenger)):
        lines.append(
            f"| {role} `{figures['tag']}` | {figures['roc_auc']:.4f} | {figures['pr_auc']:.4f} "
            f"| {figures['precision']:.3f} | {figures['recall']:.3f} | {figures['threshold']:.4f} |"
        )
    lines += [
        "",
        f"PR-AUC gain {gain['mean']:+.4f} (95% interval {gain['low']:+.4f} to "
        f"{gain['high']:+.4f}, {gain['resamples']} paired resamples).",
        "",
        f"Decision: **{'promote' if comparison['decision']['promote'] else 'keep the champion'}**",
        "",
        *[f"- {reason}" for reason in comparison["decision"]["reasons"]],
        "",
        *[f"![{image.stem}]({image.name})" for image in images],
    ]
    with (run_dir / "summary.md").open("a") as summary:
        summary.write("\n".join(lines) + "\n")
