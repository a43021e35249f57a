"""`python -m model_store`: list, show, verify, promote, roll back and read the pinned model."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from model_store import pinning, store
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


def _promote(args: argparse.Namespace) -> None:
    record = pinning.promote(
        args.tag,
        pin_file=args.pin_file,
        log_file=args.log_file,
        force=args.force,
        reason=args.reason,
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
