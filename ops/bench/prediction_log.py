"""Cost of the prediction log per logged row and per label, on each back end, side by side:
the SQLite file (the default) and PostgreSQL (a throwaway local cluster from Debian's packages,
or `--database-url`). Rows go in as the feedback store writes them: multi-row inserts of one
flush (`--batch` rows), into a log already holding `--preload` rows, so the indexes are warm.

    python ops/bench/prediction_log.py --out runs/bench-log
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from monitoring.prediction_log import PostgresLog, PredictionLog, SqliteLog  # noqa: E402
from ops.postgres import Cluster  # noqa: E402

TAG = "fraud_rf:bench"


def _rows(start: int, count: int, rng: np.random.Generator) -> list[tuple]:
    now = time.time()
    return [
        (f"req-{i // 10}", i % 10, 10, f"tx-{i}", TAG, float(score), int(score > 0.5), now, "http")
        for i, score in zip(range(start, start + count), rng.random(count), strict=True)
    ]


def measure(log: PredictionLog, preload: int, rows: int, batch: int, labels: int) -> dict:
    rng = np.random.default_rng(0)
    for start in range(0, preload, 20_000):
        log.insert(_rows(start, min(20_000, preload - start), rng))
    batches = [_rows(preload + start, batch, rng) for start in range(0, rows, batch)]
    started = time.perf_counter()
    for chunk in batches:
        log.insert(chunk)
    insert_s = time.perf_counter() - started
    retried = time.perf_counter()
    log.insert(batches[0])  # a retry: every row conflicts and is skipped
    retry_s = time.perf_counter() - retried
    picked = rng.choice(preload + rows, size=labels, replace=False)
    started = time.perf_counter()
    log.label_transactions([(f"tx-{i}", 1, time.time(), time.time()) for i in picked])
    label_s = time.perf_counter() - started
    started = time.perf_counter()
    labelled = log.labelled(TAG, 0.0)
    read_s = time.perf_counter() - started
    if len(labelled) != labels:
        raise RuntimeError(f"{len(labelled)} labelled rows read back, {labels} written")
    return {
        "rows": rows,
        "batch": batch,
        "preloaded": preload,
        "us_per_row": round(insert_s / rows * 1e6, 2),
        "rows_per_s": round(rows / insert_s),
        "us_per_retried_row": round(retry_s / batch * 1e6, 2),
        "us_per_label": round(label_s / labels * 1e6, 1),
        "realized_read_ms": round(read_s * 1000, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--preload", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2_000, help="rows per flush")
    parser.add_argument("--labels", type=int, default=2_000)
    parser.add_argument("--database-url", help="a PostgreSQL database to use (emptied tables)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench-log")
    args = parser.parse_args()
    sizes = (args.preload, args.rows, args.batch, args.labels)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        sqlite = SqliteLog(Path(folder) / "feedback.db")
        results["sqlite"] = measure(sqlite, *sizes)
        sqlite.close()
    if args.database_url:
        postgres = PostgresLog(args.database_url)
        results["postgresql"] = measure(postgres, *sizes)
        postgres.close()
    else:
        with Cluster.start() as cluster:
            postgres = PostgresLog(cluster.url)
            results["postgresql"] = measure(postgres, *sizes)
            postgres.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prediction_log.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "| back end | µs per logged row | rows/s | µs per retried row | µs per label "
        "| realized read (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for name, figures in results.items():
        lines.append(
            f"| {name} | {figures['us_per_row']} | {figures['rows_per_s']:,} "
            f"| {figures['us_per_retried_row']} | {figures['us_per_label']} "
            f"| {figures['realized_read_ms']} |"
        )
    table = "\n".join(lines)
    (args.out / "prediction_log.md").write_text(
        f"{args.rows:,} rows in flushes of {args.batch:,} into a log holding {args.preload:,}; "
        f"{args.labels:,} labels by transaction id.\n\n{table}\n"
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
