"""Send simulated transactions to a running fraud-bento, with or without drift.

    python ops/examples/send_traffic.py --rows 3000                       # like the training data
    python ops/examples/send_traffic.py --rows 3000 --drift-start-day 80  # shifted amounts, nights

Rows come from the embedded simulator (its default size, another seed than training) as rows built
by training/features.py, from day `--from-day` on (default: the drift day, or day 80).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from settings import ColumnsConfig, SimulatorConfig  # noqa: E402
from training.features import build_features, request_rows  # noqa: E402
from training.simulate import simulate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://localhost:3000")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--drift-start-day", type=int)
    parser.add_argument("--from-day", type=int)
    parser.add_argument("--seed", type=int, default=99)
    args = parser.parse_args()
    columns = ColumnsConfig()
    config = SimulatorConfig(days=110, seed=args.seed, drift_start_day=args.drift_start_day)
    features = build_features(simulate(config), columns, delay_days=7)
    day = (features[columns.timestamp] - features[columns.timestamp].min().normalize()).dt.days
    first = args.from_day if args.from_day is not None else (args.drift_start_day or 80)
    rows = request_rows(features.loc[day >= first].head(args.rows), columns)
    frauds = 0
    with httpx.Client(base_url=args.url, timeout=30) as client:
        for start in range(0, len(rows), args.batch):
            response = client.post(
                "/predict", json={"transactions": rows[start : start + args.batch]}
            )
            response.raise_for_status()
            frauds += sum(p["is_fraud"] for p in response.json()["predictions"])
    print(f"sent {len(rows)} transactions from day {first}; {frauds} flagged as fraud")


if __name__ == "__main__":
    main()
