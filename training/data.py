"""Reading a transaction table, validating it against the configured columns, explicit cleaning."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.api.types import is_bool_dtype

from settings import CleaningConfig, ColumnsConfig


@dataclass(frozen=True)
class Problem:
    column: str
    rows: int
    message: str

    def __str__(self) -> str:
        return f"column '{self.column}': {self.message} ({self.rows} rows)"


class DataValidationError(ValueError):
    """The table cannot be used; `problems` lists every reason found, not only the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(
            "data validation failed:\n" + "\n".join(f"  - {problem}" for problem in problems)
        )


@dataclass
class ValidationSummary:
    rows_in: int
    rows_out: int
    dropped: dict[str, int] = field(default_factory=dict)
    fraud_rate: float = 0.0
    first_timestamp: str = ""
    last_timestamp: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".csv", ".gz"):
        return pd.read_csv(path)
    raise ValueError(f"unsupported data file type '{path.suffix}': use .parquet or .csv")


def write_table(table: pd.DataFrame | Iterable[pd.DataFrame], path: str | Path) -> Path:
    """Write a table, or its parts one after the other (only one part in memory at a time)."""
    path = Path(path)
    if path.suffix not in (".parquet", ".csv"):
        raise ValueError(f"unsupported data file type '{path.suffix}': use .parquet or .csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [table] if isinstance(table, pd.DataFrame) else table
    with contextlib.ExitStack() as stack:
        writer = None
        for number, part in enumerate(parts):
            if path.suffix == ".csv":
                part.to_csv(path, index=False, mode="a" if number else "w", header=not number)
                continue
            batch = pa.Table.from_pandas(part, preserve_index=False)
            if writer is None:
                writer = stack.enter_context(pq.ParquetWriter(path, batch.schema))
            writer.write_table(batch)
    return path


def fingerprint(table: pd.DataFrame) -> str:
    """A content hash of a table, independent of row order."""
    row_hashes = np.sort(pd.util.hash_pandas_object(table, index=False).to_numpy())
    digest = hashlib.sha256(row_hashes.tobytes())
    digest.update(",".join(map(str, table.columns)).encode())
    return digest.hexdigest()


def _numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not is_bool_dtype(series)


def validate(
    table: pd.DataFrame, columns: ColumnsConfig, cleaning: CleaningConfig
) -> tuple[pd.DataFrame, ValidationSummary]:
    """A typed, checked copy of `table`, or DataValidationError listing every problem.

    Row-level problems (nulls, bad amounts, unparseable timestamps, duplicate ids) are dropped and
    counted when `cleaning.drop_invalid_rows` is set; table-level ones always fail.
    """
    problems: list[Problem] = []
    roles = columns.roles()
    required = list(roles.values())
    missing = {setting: name for setting, name in roles.items() if name not in table.columns}
    payment_roles = ("columns.customer_id", "columns.terminal_id", "columns.amount")
    for setting, name in missing.items():
        hint = f"set {setting} to the column that holds it"
        if setting in payment_roles:
            hint += ", or columns.payment_features = false for a table of ready features"
        problems.append(Problem(name, len(table), f"missing column ({hint})"))
    if missing:
        raise DataValidationError(problems)

    rows_in = len(table)
    table = table[required].copy()
    bad_rows: dict[str, np.ndarray] = {}

    for name in required:
        nulls = table[name].isna().to_numpy()
        if nulls.any():
            bad_rows[f"null {name}"] = nulls

    amount = [columns.amount] if columns.payment_features else []
    for name in (*amount, *columns.extra_features):
        is_flag = name in columns.extra_features and is_bool_dtype(table[name])  # 0/1 input
        if not (_numeric(table[name]) or is_flag):
            problems.append(
                Problem(name, len(table), f"must be numeric, found dtype {table[name].dtype}")
            )
            continue
        values = table[name].to_numpy(dtype=float)
        not_finite = ~np.isfinite(values) & ~table[name].isna().to_numpy()
        if not_finite.any():
            bad_rows[f"non-finite {name}"] = not_finite
        if name in amount:
            negative = values < 0
            if negative.any():
                bad_rows[f"negative {name}"] = negative

    raw_time = table[columns.timestamp]
    parsed = pd.to_datetime(raw_time, errors="coerce", utc=True, format="mixed")
    unparseable = (parsed.isna() & raw_time.notna()).to_numpy()
    if unparseable.any():
        bad_rows[f"unparseable {columns.timestamp}"] = unparseable
    table[columns.timestamp] = parsed.dt.tz_localize(None).astype("datetime64[ns]")

    label = table[columns.label]
    label_values = set(pd.unique(label.dropna()))
    if not label_values <= {0, 1}:
        shown = sorted(map(str, label_values - {0, 1}))[:5]
        problems.append(
            Problem(
                columns.label,
                int((~label.isin([0, 1, True, False]) & label.notna()).sum()),
                f"label must be binary 0/1, found {', '.join(shown)}",
            )
        )

    ids = table[columns.transaction_id]
    duplicated = (ids.duplicated(keep=False) & ids.notna()).to_numpy()
    if duplicated.any():
        bad_rows[f"duplicate {columns.transaction_id}"] = duplicated

    dropped: dict[str, int] = {}
    if bad_rows and not cleaning.drop_invalid_rows:
        for reason, mask in bad_rows.items():
            kind, column = reason.split(" ", 1)
            problems.append(Problem(column, int(mask.sum()), f"{kind} values"))
    if problems:
        raise DataValidationError(problems)
    if bad_rows:
        drop = np.zeros(len(table), dtype=bool)
        for reason, mask in bad_rows.items():
            dropped[reason] = int(mask.sum())
            drop |= mask
        table = table.loc[~drop]

    table[columns.label] = table[columns.label].astype(np.int8)
    if table[columns.label].nunique() < 2:
        only = table[columns.label].iloc[0] if len(table) else "none"
        raise DataValidationError(
            [Problem(columns.label, len(table), f"single class: every label is {only}")]
        )
    table = table.sort_values([columns.timestamp, columns.transaction_id]).reset_index(drop=True)
    summary = ValidationSummary(
        rows_in=rows_in,
        rows_out=len(table),
        dropped=dropped,
        fraud_rate=float(table[columns.label].mean()),
        first_timestamp=str(table[columns.timestamp].min()),
        last_timestamp=str(table[columns.timestamp].max()),
    )
    return table, summary
