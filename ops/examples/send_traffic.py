"""Send simulated transactions to a running fraud-bento, with or without drift.

    python ops/examples/send_traffic.py --rows 3000                       # like the training data
    python ops/examples/send_traffic.py --rows 3000 --drift-start-day 80  # shifted amounts, nights

Rows come from the embedded simulator as rows built by training/features.py, from day
`--from-day` on (default: the drift day, or day 80). The simulation's size comes from the same
settings as training (`--config`, FRAUD_SIMULATOR__*), so traffic without drift looks like the
training data; give `--customers`, `--terminals` and `--days` when the model was trained on
another size. The seed differs from training's by default: other payments, the same behaviour.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from settings import load_settings  # noqa: E402
from training.features import build_features, request_rows  # noqa: E402
from training.simulate import simulate  # noqa: E402

TRAFFIC_SEED = 99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://localhost:3000")
    parser.add_argument("--config", type=Path, help="the TOML settings file training used")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--customers", type=int, help="default: the simulator setting")
    parser.add_argument("--terminals", type=int, help="default: the simulator setting")
    parser.add_argument("--days", type=int, help="default: the simulator setting")
    parser.add_argument("--seed", type=int, default=TRAFFIC_SEED)
    parser.add_argument("--drift-start-day", type=int)
    parser.add_argument("--from-day", type=int)
    args = parser.parse_args()
    settings = load_settings(args.config)
    if not settings.columns.payment_features:
        parser.error("this script simulates payments; the model was trained on a feature table")
    size = {"customers": args.customers, "terminals": args.terminals, "days": args.days}
    config = settings.simulator.model_copy(
        update={
            **{key: value for key, value in size.items() if value is not None},
            "seed": args.seed,
            "drift_start_day": args.drift_start_day,
        }
    )
    first = args.from_day if args.from_day is not None else (args.drift_start_day or 80)
    if not 0 <= first < config.days:
        parser.error(f"--from-day {first} is outside the {config.days} simulated days (--days)")
    columns = settings.columns
    features = build_features(simulate(config, columns), columns, settings.split.delay_days)
    day = (features[columns.timestamp] - features[columns.timestamp].min().normalize()).dt.days
    rows = request_rows(features.loc[day >= first].head(args.rows), columns)
    frauds = 0
    with httpx.Client(base_url=args.url, timeout=30) as client:
        for start in range(0, len(rows), args.batch):
            response = client.post(
                "/predict", json={"transactions": rows[start : start + args.batch]}
            )
            if response.is_error:
                print(f"error: {response.status_code} {response.text[:500]}", file=sys.stderr)
                return 1
            frauds += sum(p["is_fraud"] for p in response.json()["predictions"])
    print(
        f"sent {len(rows)} transactions from day {first} of a {config.days}-day simulation of "
        f"{config.customers} customers (seed {config.seed}); {frauds} flagged as fraud"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
