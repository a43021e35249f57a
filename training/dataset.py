"""From a data file to model-ready arrays: validation, features and the leak-free temporal split.

Periods are whole days counted from the midnight before the first transaction: a burn-in that
only feeds feature windows, the training period, a gap as long as the label delay, then the test
period. Validation folds inside training are time-ordered too: each fold fits on days before
its validation days, minus the same gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from settings import ColumnsConfig, Settings, SplitConfig
from training import data, features
from training.simulate import simulate


@dataclass(frozen=True)
class Period:
    start: pd.Timestamp
    end: pd.Timestamp  # exclusive

    def contains(self, timestamps: pd.Series) -> np.ndarray:
        return ((timestamps >= self.start) & (timestamps < self.end)).to_numpy()

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


@dataclass(frozen=True)
class Fold:
    fit: Period
    validate: Period


@dataclass(frozen=True)
class TemporalSplit:
    train: Period
    test: Period
    folds: tuple[Fold, ...]


def temporal_split(
    first_timestamp: pd.Timestamp,
    last_timestamp: pd.Timestamp,
    cfg: SplitConfig,
    latest: bool = False,
) -> TemporalSplit:
    """The periods counted from the table's first day, or (`latest`, for retraining) back from
    its last day, so the test period is the most recent labelled window."""
    day0 = first_timestamp.normalize()
    day = pd.Timedelta(days=1)
    if latest:
        test_end = last_timestamp.normalize() + day
        train_end = test_end - (cfg.test_days + cfg.delay_days) * day
        day0 = max(day0, train_end - (cfg.train_days + cfg.burn_in_days) * day)
    train = Period(day0 + cfg.burn_in_days * day, day0 + (cfg.burn_in_days + cfg.train_days) * day)
    test_start = train.end + cfg.delay_days * day
    test = Period(test_start, test_start + cfg.test_days * day)
    if train.start < first_timestamp.normalize() + cfg.burn_in_days * day or (
        last_timestamp < test.end - day
    ):
        covered = (last_timestamp.normalize() - day0).days + 1
        needed = cfg.burn_in_days + cfg.train_days + cfg.delay_days + cfg.test_days
        raise ValueError(
            f"the table covers {covered} days but the split needs {needed} "
            f"(burn-in {cfg.burn_in_days}, train {cfg.train_days}, delay {cfg.delay_days}, "
            f"test {cfg.test_days}); shorten the split in the config"
        )
    folds = []
    for k in range(cfg.folds, 0, -1):
        validate_start = train.end - k * cfg.fold_validation_days * day
        validate = Period(validate_start, validate_start + cfg.fold_validation_days * day)
        folds.append(Fold(Period(train.start, validate_start - cfg.delay_days * day), validate))
    return TemporalSplit(train, test, tuple(folds))


@dataclass
class Dataset:
    """Validated table, its features and split, and the arrays every stage uses."""

    features: pd.DataFrame
    schema: list[features.Feature]
    split: TemporalSplit
    summary: data.ValidationSummary
    fingerprint: str
    timestamps: pd.Series
    X: np.ndarray
    y: np.ndarray
    card_draw: np.ndarray  # each row's card's place in a seeded random order of cards, in [0, 1)

    def cards_below(self, rows: np.ndarray, share: float) -> np.ndarray:
        """The `rows` (indices) whose card is among the first `share` of cards: all payments
        of a sample of cards, nested (a larger share holds every smaller one)."""
        return rows[self.card_draw[rows] < share]

    def mask(self, period: Period) -> np.ndarray:
        return period.contains(self.timestamps)


def card_draw(table: pd.DataFrame, columns: ColumnsConfig, seed: int) -> np.ndarray:
    """A seeded draw in [0, 1) per card, the same for all its payments; a table without payment
    features has no card column, and each payment is then drawn alone."""
    units = table[columns.customer_id if columns.payment_features else columns.transaction_id]
    salt = pd.util.hash_array(np.array([seed], dtype=np.int64))
    hashed = pd.util.hash_array(pd.util.hash_array(units.to_numpy()) ^ salt)
    return (hashed >> np.uint64(11)).astype(np.float64) * 2.0**-53


def load_dataset(data_path: str | Path | None, settings: Settings, latest: bool = False) -> Dataset:
    """Read (or simulate, when no path is given), validate and featurise a table; `latest`
    puts the test period at the table's end (temporal_split)."""
    steps = tqdm(total=3, desc="dataset", unit="step", leave=False)
    if data_path is None:
        raw = simulate(settings.simulator, settings.columns)
    else:
        raw = data.read_table(data_path)
    steps.update()
    table, summary = data.validate(raw, settings.columns, settings.cleaning)
    steps.update()
    built = features.build_features(table, settings.columns, settings.split.delay_days)
    steps.update()
    steps.close()
    split = temporal_split(
        built[settings.columns.timestamp].min(),
        built[settings.columns.timestamp].max(),
        settings.split,
        latest,
    )
    dataset = Dataset(
        features=built,
        schema=features.feature_schema(settings.columns, table),
        split=split,
        summary=summary,
        fingerprint=data.fingerprint(table),
        timestamps=built[settings.columns.timestamp],
        X=features.feature_matrix(built, settings.columns),
        y=built[settings.columns.label].to_numpy(dtype=np.int8),
        card_draw=card_draw(built, settings.columns, settings.seed),
    )
    print(
        f"dataset: {summary.rows_out} rows ({summary.rows_in - summary.rows_out} dropped), "
        f"fraud rate {summary.fraud_rate:.3%}, {dataset.X.shape[1]} features, "
        f"train {int(dataset.mask(split.train).sum())} rows, "
        f"test {int(dataset.mask(split.test).sum())} rows"
    )
    return dataset


FOLD_SETTINGS = "lower split.folds or split.fold_validation_days, or raise split.train_days"


def check_periods(dataset: Dataset) -> None:
    """Every period the run fits or scores on holds both classes, or ValueError naming the
    settings that size it (a fold without fraud cannot be scored, one without rows not fitted)."""
    periods = [("the test period", dataset.split.test, "raise split.test_days")]
    for number, fold in enumerate(dataset.split.folds, start=1):
        periods.append((f"fitting period of fold {number}", fold.fit, FOLD_SETTINGS))
        periods.append((f"validation days of fold {number}", fold.validate, FOLD_SETTINGS))
    periods.append(("the training period", dataset.split.train, "raise split.train_days"))
    for what, period, remedy in periods:
        labels = dataset.y[dataset.mask(period)]
        frauds = int(labels.sum())
        if frauds == 0 or frauds == len(labels):
            raise ValueError(
                f"{what} ({period.start.date()} to {period.end.date()}) has {len(labels)} rows "
                f"and {frauds} frauds, it needs both classes: {remedy}"
            )
