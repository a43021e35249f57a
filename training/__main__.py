"""`python -m training`: simulate data, tune, train, evaluate and register a fraud model;
retrain a challenger and promote it on evidence."""

from __future__ import annotations

import argparse
import sys
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
    from training.simulate import simulate

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
    table = simulate(simulator, settings.columns)
    write_table(table, args.out)
    print(
        f"simulated {len(table)} transactions over {simulator.days} days "
        f"(fraud rate {table[settings.columns.label].mean():.3%}) -> {args.out}"
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
