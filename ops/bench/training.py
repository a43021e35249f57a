"""Training at scale: features of simulated payment tables of growing size, and whole training runs,
each in its own process (a clean peak memory), with time per row printed so that growth that is
not linear shows.

    python ops/bench/training.py --sizes 1000000,10000000,100000000 \
        --train-sizes 1200000,10000000 --all-rows-tuning 1200000 --out runs/bench-training

Tables are simulated once into the scratch folder and reused: independent regions of the default
world (about 242,000 payments each over its 120 days), as many as the size asks, so every size
has one distribution. Per size it measures the features out of core (`python -m training
features`: Parquet to Parquet) and, up to `--memory-max` payments, in memory as training builds
them; per training size, `python -m training train` end to end (its own BentoML store in the
scratch folder) with its stages, trials and test figures; for the sizes in `--all-rows-tuning`,
also a run that tunes on every row without successive halving (the former search), for the
comparison. Results go to results.json and results.md in `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

REGION_ROWS = 242_000  # payments of one default world (seed 7: 241,798; 5 regions: 1,200,682)
# The former search: every row, no halving, and all its trials however long they take, so that
# the two runs differ only in what a trial fits on.
ALL_ROWS_TUNING = {
    "FRAUD_TUNING__SAMPLE_ROWS": "0",
    "FRAUD_TUNING__RUNGS": "1",
    "FRAUD_TUNING__TIMEOUT_S": "86400",
}


def table_for(size: int, scratch: Path) -> Path:
    """A simulated table of about `size` payments (made once, then reused)."""
    regions = max(1, round(size / REGION_ROWS))
    path = scratch / f"payments-{regions}-regions.parquet"
    if not path.is_file():
        command = ["-m", "training", "simulate", "--out", str(path), "--regions", str(regions)]
        subprocess.run([sys.executable, *command], cwd=REPO_ROOT, check=True)
    return path


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def in_memory(path: Path) -> dict:
    """Read a table and build its features as training does, in this process."""
    from settings import load_settings
    from training.data import read_table
    from training.features import build_features

    settings = load_settings()
    started = time.perf_counter()
    table = read_table(path)
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    features = build_features(table, settings.columns, settings.split.delay_days)
    seconds = time.perf_counter() - started
    return {"rows": len(features), "read_s": read_s, "seconds": seconds, "peak_gb": peak_gb()}


def out_of_core(path: Path) -> dict:
    """The features of a Parquet table written to Parquet (then removed), in this process."""
    from settings import load_settings
    from training.features import write_payment_features

    settings = load_settings()
    out = path.with_name(f"features-{path.name}")
    started = time.perf_counter()
    rows = write_payment_features(path, out, settings.columns, settings.split.delay_days)
    seconds = time.perf_counter() - started
    out.unlink()
    return {"rows": rows, "seconds": seconds, "peak_gb": peak_gb()}


def child(how: str, path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", how, str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"{how} on {path} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def features_row(size: int, scratch: Path, memory_max: int) -> dict:
    path = table_for(size, scratch)
    row = {"size": size, "out_of_core": child("out-of-core", path)}
    row["rows"] = row["out_of_core"]["rows"]
    if size <= memory_max:
        row["in_memory"] = child("in-memory", path)
    return row


def train_row(size: int, scratch: Path, all_rows: bool) -> dict:
    """`python -m training train` on a table, end to end, and what its run report says."""
    path = table_for(size, scratch)
    name = path.stem + ("-all-rows" if all_rows else "")
    runs = scratch / "runs" / name
    env = os.environ | {"BENTOML_HOME": str(scratch / "bentoml")}
    env |= ALL_ROWS_TUNING if all_rows else {}
    command = [sys.executable, "-m", "training", "train", "--data", str(path)]
    command += ["--runs-dir", str(runs)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"training on {path} failed:\n{done.stderr[-3000:]}")
    report = json.loads((max(runs.iterdir()) / "metrics.json").read_text())
    stages = {stage["stage"].split(" ")[0]: stage for stage in report["stages"]}
    return {
        "size": size,
        "rows": report["data"]["rows_out"],
        "tuning": "all rows, no halving" if all_rows else "card samples, halving",
        "seconds": seconds,
        "stages_s": {name: stage["seconds"] for name, stage in stages.items()},
        "peak_gb": max(stage["peak_memory_gb"] for stage in stages.values()),
        "trials": report["validation"]["trials"],
        "pruned": report["validation"]["pruned"],
        "validation_pr_auc": report["validation"]["pr_auc"],
        "test_pr_auc": report["test_metrics"]["pr_auc"],
        "test_roc_auc": report["test_metrics"]["roc_auc"],
        "params": report["params"],
    }


def features_table(rows: list[dict]) -> str:
    lines = [
        "| payments | out of core s | µs / row | peak GB | in memory s | µs / row | peak GB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [f"{row['rows']:,}"]
        for how in ("out_of_core", "in_memory"):
            side = row.get(how)
            cells += (
                [
                    f"{side['seconds']:.1f}",
                    f"{1e6 * side['seconds'] / side['rows']:.2f}",
                    f"{side['peak_gb']:.2f}",
                ]
                if side
                else ["-", "-", "-"]
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def training_table(rows: list[dict]) -> str:
    lines = [
        "| payments | tuning | end to end s | dataset s | tuning s | final fit s | trials "
        "(pruned) | validation PR-AUC | test PR-AUC | test ROC-AUC | peak GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        stages = row["stages_s"]
        lines.append(
            f"| {row['rows']:,} | {row['tuning']} | {row['seconds']:.0f} "
            f"| {stages['dataset']:.0f} | {stages['tuning']:.0f} | {stages['final']:.0f} "
            f"| {row['trials']} ({row['pruned']}) | {row['validation_pr_auc']:.4f} "
            f"| {row['test_pr_auc']:.4f} | {row['test_roc_auc']:.4f} | {row['peak_gb']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="1000000,10000000,100000000", help="payments, comma-separated"
    )
    parser.add_argument("--memory-max", type=int, default=10_000_000, help="largest in memory")
    parser.add_argument(
        "--train-sizes", default="1200000,10000000", help="tables trained on ('' for none)"
    )
    parser.add_argument(
        "--all-rows-tuning", default="", help="training sizes also tuned the former way"
    )
    parser.add_argument("--scratch", type=Path, default=REPO_ROOT / "runs" / "bench-training")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench-training")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # a child's work
    args = parser.parse_args()
    if args.child:
        how, path = args.child
        print(json.dumps((in_memory if how == "in-memory" else out_of_core)(Path(path))))
        return
    args.scratch.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(machine), flush=True)
    features = []
    for size in (int(size) for size in args.sizes.split(",") if size):
        features.append(features_row(size, args.scratch, args.memory_max))
        print(json.dumps(features[-1]), flush=True)
    training = []
    former = {int(size) for size in args.all_rows_tuning.split(",") if size}
    for size in (int(size) for size in args.train_sizes.split(",") if size):
        for all_rows in (False, True) if size in former else (False,):
            training.append(train_row(size, args.scratch, all_rows))
            print(json.dumps(training[-1]), flush=True)
    markdown = "Features of simulated payment tables (each side in its own process)\n\n"
    markdown += features_table(features)
    if training:
        markdown += "\n\n`python -m training train` end to end (default settings)\n\n"
        markdown += training_table(training)
    print(markdown)
    results = {"machine": machine, "features": features, "training": training}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(markdown + "\n")


if __name__ == "__main__":
    main()
