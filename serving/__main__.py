"""`python -m serving backfill --data TABLE`: load /score's online state from a payment table,
so that a new deployment scores its first payment with full windows.

Run it before the server starts (the embedded state is read when a worker starts; Redis, the
store `payments.store = 'redis'` names, may be filled at any time), on the
payments of at least the last 30 days plus the label delay, with their labels where known. The
table is in the model's own columns (its `[columns]` mapping); payments already in the state
count once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

import model_store
from model_store.payments import DAY_SECONDS, state_horizon_days
from serving.payments.embedded_state import EmbeddedState
from serving.payments.payment_requests import payment_columns
from serving.payments.payment_scoring import open_store
from serving.payments.payment_state import table_payments
from serving.scoring.runtime import pinned_tag
from settings import load_settings


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise SystemExit(f"--data {path}: expected a .parquet or .csv table")


def backfill(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    tag = args.model or pinned_tag(settings, Path(__file__).resolve().parent.parent / "service.py")
    stored = model_store.get(tag)
    columns = payment_columns(stored)
    if columns is None:
        print(f"{tag} does not score raw payments (no payment features): nothing to backfill")
        return 1
    table = _read(args.data)
    needed = (
        columns.transaction_id,
        columns.timestamp,
        columns.customer_id,
        columns.terminal_id,
        columns.amount,
    )
    missing = [column for column in needed if column not in table]
    if missing:
        print(f"--data {args.data}: missing columns {missing} (the model's [columns] mapping)")
        return 1
    delay_days = int(stored.metadata["label_delay_days"])
    times = pd.to_datetime(table[columns.timestamp])
    horizon = pd.Timedelta(seconds=state_horizon_days(delay_days) * DAY_SECONDS)
    table = table[times >= times.max() - horizon]
    started = time.monotonic()
    if args.state:
        state = EmbeddedState(args.state, delay_days)
    else:
        state = open_store(settings, delay_days)
    added = state.backfill(*table_payments(table, columns))
    size = state.size()
    state.close()
    print(
        f"backfilled {added} payments for {tag} in {time.monotonic() - started:.1f}s; the state "
        f"holds {size['payments']} payments of {size['customers']} customers and "
        f"{size['terminals']} terminals"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("backfill", help="load /score's state from a payment table")
    command.add_argument("--data", type=Path, required=True, help="a .parquet or .csv table")
    command.add_argument("--model", help="the model tag (default: the one served)")
    command.add_argument(
        "--state", type=Path, help="an embedded state file (default: the settings' store)"
    )
    command.add_argument("--config", help="a settings TOML file")
    return backfill(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
