"""Stall attribution: the Bento under open-loop load at shares of its held rate, with the worker's
own loop watch (every event-loop stall over 20 ms logged with the GC pauses inside it and where
the other threads were) and py-spy sampling which thread holds the GIL. py-spy runs without
pausing the worker (`--nonblocking`, so Python frames only): pausing it 200 times a second to
read native stacks stalled it for seconds, the very thing measured.

    python ops/bench/stalls.py [--seconds 60] [--shares 0.3,0.5,0.7] [--out runs/stalls]

Server and load generator (and py-spy) are pinned as in the benchmark. Writes report.json and
report.md: per share, the latency, the stalls (count, longest, how many had a GC pause in them),
the GC pauses by generation, and what held the GIL most.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections import Counter
from pathlib import Path

import psutil
from run import BIN, LOADGEN_PIN, PINNING, REPO_ROOT, Server, bento_server, bodies, held_rate, load

STALL_MS = 20


def _worker_pid(server: Server) -> int:
    for child in psutil.Process(server.process.pid).children(recursive=True):
        if "_bentoml_impl.worker.service" in " ".join(child.cmdline()):
            return child.pid
    raise RuntimeError("no API worker found")


def _stalls(log: Path, start: int) -> list[dict]:
    lines = log.read_text(errors="replace").splitlines()[start:]
    found = []
    for line in lines:
        if '"fraud_bento.stalls"' in line:
            found.append(json.loads(line))
    return found


def _gil_holders(raw: Path, top: int = 8) -> list[tuple[str, float]]:
    """The innermost frames py-spy saw holding the GIL, as shares of its samples."""
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frame = stack.split(";")[-1]
        own[frame] += int(count)
        total += int(count)
    return [(frame, round(count / max(total, 1), 3)) for frame, count in own.most_common(top)]


def attribute(stalls: list[dict]) -> dict:
    with_gc = [s for s in stalls if s["gc_ms"] >= 0.5 * s["stall_ms"]]
    return {
        "stalls": len(stalls),
        "longest_ms": max((s["stall_ms"] for s in stalls), default=0.0),
        "total_ms": round(sum(s["stall_ms"] for s in stalls), 1),
        "mostly_gc": len(with_gc),
        "gc_generations": dict(Counter(p["generation"] for s in stalls for p in s["gc"])),
        "threads_seen": dict(Counter(t for s in stalls for t in s["threads"].values())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--shares", default="0.3,0.5,0.7")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "stalls")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    body = bodies(args.out, (1,))[("rows", 1)]
    server = bento_server({"FRAUD_SERVING__STALL_LOG_MS": str(STALL_MS)})
    log = args.out / "server.log"
    server.start(log)
    report: dict = {"pinning": PINNING, "stall_ms": STALL_MS, "shares": []}
    try:
        held = held_rate(server, body)
        report["held_rps"] = held
        worker = _worker_pid(server)
        for share in (float(s) for s in args.shares.split(",")):
            rate = round(share * held, 1)
            start = len(log.read_text(errors="replace").splitlines())
            raw = args.out / f"gil-{share}.txt"
            sampler = subprocess.Popen(
                [*LOADGEN_PIN, str(BIN / "py-spy"), "record", "--pid", str(worker), "--gil"]
                + ["--nonblocking", "--rate", "100", "--format", "raw", "--output", str(raw)]
                + ["--duration", str(int(args.seconds))],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            step = load(server, body, "rate", rate, args.seconds)
            sampler.wait(60)
            found = _stalls(log, start)
            report["shares"].append(
                {
                    "share": share,
                    "rate_rps": rate,
                    **{k: step[k] for k in ("errors", "p50_ms", "p99_ms", "max_ms")},
                    **attribute(found),
                    "gil_holders": _gil_holders(raw) if raw.is_file() else [],
                }
            )
            print(json.dumps(report["shares"][-1]), flush=True)
    finally:
        server.stop()
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"Stalls over {STALL_MS} ms, 1-transaction /predict, held rate {report['held_rps']:.0f} "
        f"req/s ({PINNING})",
        "",
        "| share | rate | errors | p50 / p99 / max ms | stalls | longest ms | mostly GC | "
        "top GIL holder |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["shares"]:
        holder = row["gil_holders"][0] if row["gil_holders"] else ("-", 0)
        lines.append(
            f"| {row['share']:.0%} | {row['rate_rps']:.0f} | {row['errors']} "
            f"| {row['p50_ms']:.2f} / {row['p99_ms']:.1f} / {row['max_ms']:.0f} "
            f"| {row['stalls']} | {row['longest_ms']:.0f} | {row['mostly_gc']} "
            f"| {holder[0][:60]} ({holder[1]:.0%}) |"
        )
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
