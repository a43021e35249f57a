"""`python -m training`: simulate data, tune, train, evaluate and register a fraud model;
retrain a challenger and promote it on evidence."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model_store import ModelStoreError
from settings import Settings, load_settings
from training.data import DataValidationError, write_table


def _settings(args: argparse.Namespace) -> Settings:
    tuning: dict[str, Any] = {}
    for option, key in (
        ("trials", "trials"),
        ("timeout", "timeout_s"),
        ("storage", "storage"),
        ("study_name", "study_name"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            tuning[key] = value
    overrides: dict[str, Any] = {"tuning": tuning} if tuning else {}
    if getattr(args, "runs_dir", None) is not None:
        overrides["runs_dir"] = args.runs_dir
    return load_settings(args.config, **overrides)


def _simulate(args: argparse.Namespace) -> None:
    import pandas as pd

    from training.simulate import simulate_regions

    settings = load_settings(args.config)
    simulator = settings.simulator.model_copy(
        update={
            key: value
            for key, value in {
                "days": args.days,
                "customers": args.customers,
                "terminals": args.terminals,
                "seed": args.seed,
                "drift_start_day": args.drift_start_day,
            }.items()
            if value is not None
        }
    )
    label = settings.columns.label
    rows = frauds = 0

    def counted(parts: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        nonlocal rows, frauds
        for part in parts:
            rows, frauds = rows + len(part), frauds + int(part[label].sum())
            yield part

    write_table(counted(simulate_regions(simulator, args.regions, settings.columns)), args.out)
    regions = f" in {args.regions} regions" if args.regions > 1 else ""
    print(
        f"simulated {rows} transactions over {simulator.days} days{regions} "
        f"(fraud rate {frauds / rows:.3%}) -> {args.out}"
    )


def _train(args: argparse.Namespace) -> None:
    from training.train import run_training

    run_training(_settings(args), args.data, promote=args.promote)


def _retrain(args: argparse.Namespace) -> None:
    from training.retrain import run_retrain

    run_retrain(_settings(args), args.data, champion_tag=args.champion, promote=args.promote)


def _tune(args: argparse.Namespace) -> None:
    from training.dataset import load_dataset
    from training.tune import tune

    settings = _settings(args)
    tune(
        load_dataset(args.data, settings),
        settings.tuning,
        settings.tuning.storage,
        settings.tuning.study_name,
        settings.seed,
    )


def _features(args: argparse.Namespace) -> None:
    from training.features import write_payment_features

    if not args.data.is_file():
        raise FileNotFoundError(f"data file not found: {args.data}")
    settings = load_settings(args.config)
    started = time.monotonic()
    rows = write_payment_features(args.data, args.out, settings.columns, settings.split.delay_days)
    print(f"features of {rows} payments in {time.monotonic() - started:.1f} s -> {args.out}")


def _tuning_options(command: argparse.ArgumentParser, shared_storage: bool) -> None:
    command.add_argument("--trials", type=int, help="new Optuna trials to run")
    command.add_argument("--timeout", type=float, help="stop tuning after this many seconds")
    command.add_argument(
        "--storage",
        required=shared_storage,
        help="Optuna storage: a database URL (sqlite:///f.db, postgresql://...) or journal:PATH",
    )
    command.add_argument("--study-name", required=shared_storage)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML settings file; examples: ops/examples/training.toml (a payments table with "
        "its own column names), ops/examples/feature_table.toml (a table of ready features)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser("simulate", help="write a simulated transaction table")
    simulate.add_argument("--out", type=Path, required=True, help=".parquet or .csv")
    simulate.add_argument("--days", type=int)
    simulate.add_argument("--customers", type=int)
    simulate.add_argument("--terminals", type=int)
    simulate.add_argument("--seed", type=int)
    simulate.add_argument("--drift-start-day", type=int, help="shift amounts and hours from here")
    simulate.add_argument(
        "--regions",
        type=int,
        default=1,
        help="independent worlds of this size, one after the other: a table of any size with "
        "the default world's distribution, simulated and written a region at a time",
    )
    simulate.set_defaults(run=_simulate)

    train = commands.add_parser(
        "train", help="tune, fit, evaluate, explain and register a model, with a run report"
    )
    train.add_argument("--data", type=Path, help="table to train on (default: simulate one)")
    train.add_argument("--runs-dir", type=Path, help="where run folders go")
    train.add_argument("--promote", action="store_true", help="pin the model if it passes")
    _tuning_options(train, shared_storage=False)
    train.set_defaults(run=_train)

    retrain = commands.add_parser(
        "retrain",
        help="train a challenger on the latest data, compare it with the champion on the most "
        "recent labelled window, promote it only when the promotion rule holds",
    )
    retrain.add_argument("--data", type=Path, help="the latest table (default: simulate one)")
    retrain.add_argument("--champion", help="the model to beat (default: the pinned tag)")
    retrain.add_argument("--runs-dir", type=Path, help="where run folders go")
    retrain.add_argument(
        "--promote", action="store_true", help="pin the challenger if the rule holds"
    )
    _tuning_options(retrain, shared_storage=False)
    retrain.set_defaults(run=_retrain)

    features = commands.add_parser(
        "features",
        help="write the payment features of a Parquet table of any size to Parquet, out of core",
    )
    features.add_argument("--data", type=Path, required=True, help="a .parquet payment table")
    features.add_argument("--out", type=Path, required=True, help="the .parquet to write")
    features.set_defaults(run=_features)

    tune = commands.add_parser(
        "tune", help="add trials to a shared study (run several on one storage)"
    )
    tune.add_argument("--data", type=Path, help="table to tune on (default: simulate one)")
    _tuning_options(tune, shared_storage=True)
    tune.set_defaults(run=_tune)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except DataValidationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ModelStoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
