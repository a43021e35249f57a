"""Training at scale: the features of simulated payment tables of growing size, each built in its
own process (a clean peak memory), with the time per row printed so that growth that is not
linear shows.

    python ops/bench/training.py --sizes 1000000,10000000 --out runs/bench-training

Tables are simulated once into the scratch folder (the simulator's 120 days, customers and
terminals scaled with the size) and reused. Per size it prints the rows, the seconds to read the
table and to build its features, microseconds a row, and the peak resident memory of the
process, then writes results.json and results.md to `--out`.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

ROWS_PER_CUSTOMER = 242  # the simulator's 120 days, measured: 1,000 customers give 241,798 rows


def table_for(size: int, scratch: Path) -> Path:
    """A simulated table of about `size` payments (made once, then reused)."""
    path = scratch / f"payments-{size}.parquet"
    if not path.is_file():
        customers = max(10, round(size / ROWS_PER_CUSTOMER))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "training",
                "simulate",
                "--out",
                str(path),
                "--customers",
                str(customers),
                "--terminals",
                str(2 * customers),
            ],
            cwd=REPO_ROOT,
            check=True,
        )
    return path


def build(path: Path) -> dict:
    """Read a table and build its features, in this process: what it cost."""
    from settings import load_settings
    from training.data import read_table
    from training.features import build_features

    settings = load_settings()
    started = time.perf_counter()
    table = read_table(path)
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    features = build_features(table, settings.columns, settings.split.delay_days)
    features_s = time.perf_counter() - started
    return {
        "rows": len(features),
        "read_s": read_s,
        "features_s": features_s,
        "us_per_row": 1e6 * features_s / len(features),
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def measure(size: int, scratch: Path) -> dict:
    path = table_for(size, scratch)
    done = subprocess.run(
        [sys.executable, __file__, "--build", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def table(results: list[dict]) -> str:
    lines = [
        "| payments | read s | features s | µs / row | peak memory GB |",
        "|---|---|---|---|---|",
    ]
    for row in results:
        lines.append(
            f"| {row['rows']:,} | {row['read_s']:.1f} | {row['features_s']:.1f} "
            f"| {row['us_per_row']:.2f} | {row['peak_gb']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="payments, comma-separated")
    parser.add_argument("--scratch", type=Path, default=REPO_ROOT / "runs" / "bench-training")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench-training")
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)  # the child's work
    args = parser.parse_args()
    if args.build:
        print(json.dumps(build(args.build)))
        return
    args.scratch.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(machine), flush=True)
    results = []
    for size in (int(size) for size in args.sizes.split(",")):
        results.append(measure(size, args.scratch))
        print(json.dumps(results[-1]), flush=True)
    markdown = "Features of simulated payment tables (each size in its own process)\n\n"
    markdown += table(results)
    print(markdown)
    (args.out / "results.json").write_text(json.dumps({"machine": machine, "results": results}))
    (args.out / "results.md").write_text(markdown + "\n")


if __name__ == "__main__":
    main()
