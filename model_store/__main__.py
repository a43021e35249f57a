"""`python -m model_store`: list, show, verify, promote, roll back and read the pinned model."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from model_store import evidence, pinning, store
from model_store.errors import ModelStoreError
from settings import load_settings


def _list(args: argparse.Namespace) -> None:
    pinned = pinning.current(args.pin_file)
    ever_promoted = {record.to_tag for record in pinning.history(args.log_file)}
    print(f"{'tag':<36} {'created (UTC)':<20} {'gate':<7} {'ROC-AUC':>8} {'PR-AUC':>8}  promoted")
    for stored in store.list_models():
        metrics = stored.metadata.get("test_metrics", {})
        state = (
            "pinned" if stored.tag == pinned else "before" if stored.tag in ever_promoted else ""
        )
        print(
            f"{stored.tag:<36} {stored.created:%Y-%m-%d %H:%M:%S} "
            f"{stored.labels.get('gate', '?'):<7} {metrics.get('roc_auc', float('nan')):>8.4f} "
            f"{metrics.get('pr_auc', float('nan')):>8.4f}  {state}"
        )


def _show(args: argparse.Namespace) -> None:
    stored = store.get(args.tag)
    print(
        json.dumps(
            {
                "tag": stored.tag,
                "created": stored.created.isoformat(),
                "path": str(stored.path),
                "labels": stored.labels,
                "metadata": stored.metadata,
            },
            indent=2,
            default=str,
        )
    )


def _verify(args: argparse.Namespace) -> None:
    stored = store.get(args.tag)
    print(f"{stored.tag}: sha256 {store.verify(stored)} OK")


def _monitoring_log():
    """The serving side's prediction log, as the settings place it. The CLI reads it for the
    live comparison; the library modules of model_store never touch monitoring."""
    from monitoring.prediction_log import open_log

    settings = load_settings()
    return open_log(settings.monitoring.database_url, settings.feedback_db_path())


def _comparison(champion_tag: str, challenger_tag: str) -> dict:
    """Offline (the retraining comparison on one window when the promotion log has it, and each
    model's own test figures) and live (the labelled transactions both models scored)."""
    settings = load_settings()
    champion, challenger = store.get(champion_tag), store.get(challenger_tag)
    same_window = [
        r.evidence
        for r in pinning.history(settings.store.promotion_log)
        if r.evidence
        and r.evidence.get("champion", {}).get("tag") == champion.tag
        and r.evidence.get("challenger", {}).get("tag") == challenger.tag
    ]
    comparison = {
        "champion": champion.tag,
        "challenger": challenger.tag,
        "offline_same_window": same_window[-1] if same_window else None,
        "offline_own_test": {
            "champion": champion.metadata.get("test_metrics", {}),
            "challenger": challenger.metadata.get("test_metrics", {}),
        },
    }
    since = time.time() - settings.monitoring.realized_window_days * 86400
    try:
        log = _monitoring_log()
        paired = log.paired_labels(champion.tag, challenger.tag, since)
        log.close()
    except Exception as error:  # a missing file, a database that is down: say so, go on
        comparison["live"] = {"error": f"cannot read the prediction log: {error}"}
        return comparison
    rows = np.array(paired, dtype=float).reshape(-1, 3)
    live: dict = {
        "champion": evidence.figures(rows[:, 0], rows[:, 1], champion.threshold),
        "challenger": evidence.figures(rows[:, 0], rows[:, 2], challenger.threshold),
    }
    if 0 < rows[:, 0].sum() < len(rows):
        rule = settings.promotion
        live["pr_auc_gain"] = evidence.paired_bootstrap(
            rows[:, 0], rows[:, 1], rows[:, 2], samples=rule.bootstrap_samples,
            margin=rule.min_pr_auc_gain, seed=settings.seed,
        )  # fmt: skip
        live["decision"] = evidence.decide(
            live["champion"], live["challenger"], live["pr_auc_gain"], challenger.gate_passed, rule
        ).as_dict()
    comparison["live"] = live
    return comparison


def _compare(args: argparse.Namespace) -> None:
    comparison = _comparison(args.champion, args.challenger)
    same, own, live = (
        comparison["offline_same_window"],
        comparison["offline_own_test"],
        comparison["live"],
    )
    lines = []
    if same:
        lines.append(("offline, same window: PR-AUC", same["champion"], same["challenger"]))
    lines.append(("offline, own test: PR-AUC", own["champion"], own["challenger"]))
    print(f"{comparison['champion']} (champion) vs {comparison['challenger']} (challenger)")
    for name, a, b in lines:
        print(f"  {name:<34} {a.get('pr_auc', math.nan):>8.4f} {b.get('pr_auc', math.nan):>8.4f}")
    if "error" in live:
        print(f"  live: {live['error']}")
    else:
        for key in ("rows", "frauds", "pr_auc", "precision", "recall"):
            print(f"  live {key:<29} {live['champion'][key]:>8.4f} {live['challenger'][key]:>8.4f}")
        if "decision" in live:
            print("  live rule: " + "; ".join(live["decision"]["reasons"]))
    if args.json:
        print(json.dumps(comparison, indent=2, default=str))


def _promote(args: argparse.Namespace) -> None:
    challenger_file = load_settings().store.challenger_pin_file
    champion = pinning.current(args.pin_file)
    why = None
    if champion and pinning.current(challenger_file) == args.tag:
        why = _comparison(champion, args.tag)  # promoting the challenger: log the evidence
    record = pinning.promote(
        args.tag,
        pin_file=args.pin_file,
        log_file=args.log_file,
        force=args.force,
        reason=args.reason,
        evidence=why,
        challenger_pin_file=challenger_file,
    )
    if record.forced:
        print(
            f"WARNING: {record.to_tag} failed its gate and was promoted with --force",
            file=sys.stderr,
        )
    print(f"promoted {record.to_tag} (was {record.from_tag}); pin file {args.pin_file}")


def _rollback(args: argparse.Namespace) -> None:
    record = pinning.rollback(pin_file=args.pin_file, log_file=args.log_file, reason=args.reason)
    print(f"rolled back to {record.to_tag} (was {record.from_tag}); pin file {args.pin_file}")


def _challenger(args: argparse.Namespace) -> None:
    settings = load_settings()
    if args.tag is None and not args.clear:
        print(pinning.current(settings.store.challenger_pin_file) or "no challenger is pinned")
        return
    record = pinning.pin_challenger(
        None if args.clear else args.tag,
        challenger_pin_file=settings.store.challenger_pin_file,
        pin_file=args.pin_file,
        log_file=args.log_file,
        reason=args.reason,
    )
    print(f"{record.action}: {record.to_tag}; rebuild the Bento to serve it")


def _current(args: argparse.Namespace) -> None:
    tag = pinning.current(args.pin_file)
    if tag is None:
        raise ModelStoreError(f"no model is promoted yet ({args.pin_file} is missing)")
    print(tag)


def _history(args: argparse.Namespace) -> None:
    for record in pinning.history(args.log_file):
        print(json.dumps(asdict(record)))


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="python -m model_store", description=__doc__)
    parser.add_argument("--pin-file", type=Path, default=settings.store.pin_file)
    parser.add_argument("--log-file", type=Path, default=settings.store.promotion_log)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every fraud_rf model with its gate and metrics").set_defaults(
        run=_list
    )
    for name, run, help_text in (
        ("show", _show, "labels and metadata of one tag"),
        ("verify", _verify, "check the artifact's sha256 (exit 1 on mismatch)"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("tag")
        command.set_defaults(run=run)
    promote = commands.add_parser("promote", help="pin an exact tag for the next Bento build")
    promote.add_argument("tag")
    promote.add_argument("--force", action="store_true", help="promote even if the gate failed")
    promote.add_argument("--reason", default="")
    promote.set_defaults(run=_promote)
    rollback = commands.add_parser("rollback", help="re-pin the previously promoted tag")
    rollback.add_argument("--reason", default="")
    rollback.set_defaults(run=_rollback)
    compare = commands.add_parser(
        "compare", help="a champion and a challenger side by side: offline and live figures"
    )
    compare.add_argument("champion")
    compare.add_argument("challenger")
    compare.add_argument("--json", action="store_true", help="also print the whole comparison")
    compare.set_defaults(run=_compare)
    challenger = commands.add_parser(
        "challenger", help="pin (or --clear) the challenger served beside the champion"
    )
    challenger.add_argument("tag", nargs="?")
    challenger.add_argument("--clear", action="store_true")
    challenger.add_argument("--reason", default="")
    challenger.set_defaults(run=_challenger)
    commands.add_parser("current", help="the pinned tag").set_defaults(run=_current)
    commands.add_parser("history", help="the promotion log").set_defaults(run=_history)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ModelStoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
