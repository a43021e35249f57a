"""Soak: the Bento at a fixed share of its measured capacity for a long while, watching for errors,
the latency bound, latency drift, memory growth and leaking file descriptors.

    python ops/bench/soak.py [--duration 600] [--interval 60] [--share 0.7] [--out runs/soak]

Capacity is the benchmark's open-loop ladder (the highest arrival rate held at p99 <= 50 ms with
no errors); then the load generator runs interval after interval at share x capacity
(1-transaction requests), and after each one the server's process tree is sampled (RSS, open
file descriptors). Server and load generator are pinned as in the benchmark. Writes report.json
(per-interval p50/p99, errors, RSS, fds, and the checks) and soak.png; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from run import (
    BENCH,
    P99_BOUND_MS,
    PINNING,
    REPO_ROOT,
    Server,
    bento_server,
    bodies,
    held_rate,
    load,
    plt,
)

P99_GROWTH_FACTOR = 2.0  # the last third's median p99 against the first third's
P99_SLACK_MS = 10.0  # below this, differences are noise
RSS_GROWTH_LIMIT = 0.05
FD_GROWTH_LIMIT = 10


def _open_files(server: Server) -> int:
    return int(server.sum_over_tree(lambda process: process.num_fds()))


def checks(intervals: list[dict]) -> dict[str, dict]:
    third = max(1, len(intervals) // 3)
    first_p99 = statistics.median(i["p99_ms"] for i in intervals[:third])
    last_p99 = statistics.median(i["p99_ms"] for i in intervals[-third:])
    # Growth is measured from the end of the first third: warm-up allocates (caches, arenas).
    warmed = intervals[third - 1]
    rss_growth = intervals[-1]["rss_mb"] / warmed["rss_mb"] - 1
    fd_growth = intervals[-1]["open_files"] - warmed["open_files"]
    errors = sum(i["errors"] for i in intervals)
    worst_p99 = max(i["p99_ms"] for i in intervals)
    return {
        "zero_errors": {"passed": errors == 0, "errors": errors},
        "p99_within_bound": {
            "passed": worst_p99 <= P99_BOUND_MS,
            "worst_interval_p99_ms": worst_p99,
        },
        "p99_stable": {
            "passed": last_p99 <= P99_GROWTH_FACTOR * first_p99 + P99_SLACK_MS,
            "first_third_p99_ms": first_p99,
            "last_third_p99_ms": last_p99,
        },
        "rss_growth_under_5pct": {
            "passed": rss_growth < RSS_GROWTH_LIMIT,
            "growth": rss_growth,
            "after_warm_up_mb": warmed["rss_mb"],
        },
        "open_files_stable": {"passed": fd_growth <= FD_GROWTH_LIMIT, "growth": fd_growth},
    }


def plot(intervals: list[dict], path: Path) -> None:
    minutes = [i["end_s"] / 60 for i in intervals]
    fig, (latency, memory) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    latency.plot(minutes, [i["p50_ms"] for i in intervals], "o-", label="p50")
    latency.plot(minutes, [i["p99_ms"] for i in intervals], "o-", label="p99")
    latency.set(ylabel="latency (ms)", title="soak: latency and memory per interval")
    latency.legend()
    memory.plot(minutes, [i["rss_mb"] for i in intervals], "o-", color="tab:red")
    memory.set(xlabel="minutes", ylabel="RSS of the server (MB)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of soak")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds per sample")
    parser.add_argument("--share", type=float, default=0.7, help="of the measured capacity")
    parser.add_argument("--rate", type=float, help="requests/s; skips measuring the capacity")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "soak")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    body = bodies(args.out, (1,))[("rows", 1)]
    server = bento_server()
    server.start(args.out / "server.log")
    try:
        capacity = held_rate(server, body) if not args.rate else None
        rate = args.rate or round(args.share * capacity, 1)
        print(f"capacity {capacity} req/s ({PINNING}); soaking at {rate} req/s")
        intervals, started = [], time.monotonic()
        while time.monotonic() - started < args.duration:
            step = load(server, body, "rate", rate, args.interval)
            sample = {
                "end_s": round(time.monotonic() - started, 1),
                **{
                    k: step[k]
                    for k in ("requests", "errors", "throughput_rps", "p50_ms", "p99_ms", "max_ms")
                },
                "rss_mb": round(server.rss_mb(), 1),
                "open_files": _open_files(server),
            }
            intervals.append(sample)
            print(json.dumps(sample), flush=True)
    finally:
        server.stop()
    verdict = checks(intervals)
    report = {
        "duration_s": args.duration,
        "interval_s": args.interval,
        "capacity_rps": capacity,
        "share": None if args.rate else args.share,
        "rate_rps": rate,
        "intervals": intervals,
        "checks": verdict,
        "passed": all(check["passed"] for check in verdict.values()),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    plot(intervals, args.out / "soak.png")
    print(json.dumps(verdict, indent=2))
    print(f"wrote {args.out}/report.json and soak.png ({BENCH.name} load generator)")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
