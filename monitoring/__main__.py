"""`python -m monitoring`: profile a table, or report drift of served traffic against a model."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

import model_store
from monitoring import SCORE_COLUMN
from monitoring import whylogs_adapter as profiles
from monitoring.drift import DRIFT, Thresholds, compare
from settings import load_settings


def _read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def _profile(args: argparse.Namespace) -> int:
    out = args.out or args.data.with_suffix(".profile.bin")
    view = profiles.profile(_read(args.data))
    out.write_bytes(profiles.to_bytes(view))
    print(f"profiled {len(profiles.columns(view))} columns of {args.data} -> {out}")
    return 0


def _window_start(path: Path) -> float:
    return float(path.stem.split("-")[1])


def _drift(args: argparse.Namespace) -> int:
    from monitoring import report

    settings = load_settings()
    stored = model_store.get(args.model)
    reference_bytes = model_store.load_reference_profile(stored)
    if reference_bytes is None:
        print(f"error: {stored.tag} carries no reference profile", file=sys.stderr)
        return 2
    since = datetime.fromisoformat(args.since).timestamp() if args.since else 0.0
    windows = sorted(p for p in args.profiles.glob("window-*.bin") if _window_start(p) >= since)
    if args.current:
        windows = [args.current]
    if not windows:
        print(f"error: no window profiles in {args.profiles}", file=sys.stderr)
        return 2
    reference = profiles.from_bytes(reference_bytes)
    current = profiles.merge([profiles.from_bytes(p.read_bytes()) for p in windows])
    features = [f["name"] for f in stored.features] + [SCORE_COLUMN]
    monitored = [f for f in features if f not in settings.monitoring.exclude_features]
    thresholds = Thresholds(settings.monitoring.drift_p_value, settings.monitoring.drift_min_effect)
    results = compare(reference, current, monitored, thresholds)
    title = f"Drift of {len(windows)} window(s) against {stored.tag}"
    out = args.out or settings.runs_dir / "drift" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.render(title, results, reference, current))
    drifted = [r.feature for r in results if r.category == DRIFT]
    print(f"{title}: {', '.join(drifted) or 'no drift'} -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitoring", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    profile = commands.add_parser("profile", help="profile a .csv or .parquet table")
    profile.add_argument("--data", type=Path, required=True)
    profile.add_argument("--out", type=Path)
    profile.set_defaults(run=_profile)
    drift = commands.add_parser("drift", help="HTML drift report of window profiles vs a model")
    drift.add_argument("--model", required=True, help="exact model tag")
    drift.add_argument("--profiles", type=Path, default=Path("."), help="folder of window-*.bin")
    drift.add_argument("--since", help="ISO time: only windows starting from then")
    drift.add_argument("--current", type=Path, help="compare this one profile file instead")
    drift.add_argument(
        "--out", type=Path, help="HTML file (default: <runs_dir>/drift/<UTC time>.html)"
    )
    drift.set_defaults(run=_drift)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
