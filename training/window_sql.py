"""The payment features' window aggregates as one SQL query, generated from their definition
(model_store/payments.py) for each engine that runs it: DuckDB on one machine (window functions
over range frames, spilling to disk past its memory limit) and Spark SQL past one machine. The
query is written once here; a dialect only names the few functions the engines spell
differently.

Times are compared in microseconds since the epoch (both engines' timestamp resolution, and the
service's). A window of `days` at time t holds the key's payments in [t - days, t): the frame
`RANGE BETWEEN days PRECEDING AND 1 PRECEDING` over those microseconds, so payments at the same
instant do not see each other; a terminal's windows end `delay_days` earlier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from model_store.payments import EPOCH_WEEKDAY, HISTORY_DAYS, WINDOWS_DAYS, WindowAggregates
from settings import ColumnsConfig

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
POSITION = "row_position"  # the input row each result row belongs to


@dataclass(frozen=True)
class Dialect:
    """How an engine spells what the query needs beyond standard SQL."""

    name: str
    quote: str  # around an identifier
    epoch_us: str  # a timestamp's microseconds since the epoch: `{}` is the timestamp
    floor_div: str  # integer division of two non-negative integers: `{}` and `{}`


DUCKDB = Dialect("duckdb", '"', "epoch_us({})", "({} // {})")
SPARK = Dialect("spark", "`", "unix_micros({})", "({} div {})")


def _names() -> list[str]:
    """The query's aggregate columns, in the order `aggregates_from` reads them."""
    names = ["amount", "weekday", "hour"]
    for days in WINDOWS_DAYS:
        names += [f"customer_count_{days}d", f"customer_sum_{days}d"]
    names += ["customer_sum_squares", "pair_count"]
    for days in WINDOWS_DAYS:
        names += [f"terminal_count_{days}d", f"terminal_fraud_{days}d"]
    return names


AGGREGATES = _names()


def aggregates_query(
    source: str,
    columns: ColumnsConfig,
    delay_days: int,
    dialect: Dialect = DUCKDB,
    keep: Sequence[str] = (POSITION,),
) -> str:
    """The query over `source` (a table or view with the table's columns as `columns` names
    them, and the `keep` columns) answering each row's `keep` columns (by default its position,
    a `row_position` column the source must have) and its AGGREGATES."""

    def q(name: str) -> str:  # an identifier, its quote character doubled inside
        mark = dialect.quote
        return f"{mark}{name.replace(mark, mark * 2)}{mark}"

    def frame(keys: list[str], start_us: int, end_us: int) -> str:
        """Over the key's rows in [t - start, t - end)."""
        partition = ", ".join(q(key) for key in keys)
        return (
            f"OVER (PARTITION BY {partition} ORDER BY t_us "
            f"RANGE BETWEEN {start_us} PRECEDING AND {end_us + 1} PRECEDING)"
        )

    customer, terminal = [columns.customer_id], [columns.terminal_id]
    delay_us = delay_days * DAY_US
    selected = [
        *(q(name) for name in keep),
        "amount",
        f"({dialect.floor_div.format('t_us', DAY_US)} + {EPOCH_WEEKDAY}) % 7 AS weekday",
        f"{dialect.floor_div.format(f't_us % {DAY_US}', HOUR_US)} AS hour",
    ]
    for days in WINDOWS_DAYS:
        over = frame(customer, days * DAY_US, 0)
        selected += [
            f"count(*) {over} AS customer_count_{days}d",
            f"coalesce(sum(amount) {over}, 0) AS customer_sum_{days}d",
        ]
    history = frame(customer, HISTORY_DAYS * DAY_US, 0)
    selected += [
        f"coalesce(sum(amount * amount) {history}, 0) AS customer_sum_squares",
        f"count(*) {frame([*customer, *terminal], HISTORY_DAYS * DAY_US, 0)} AS pair_count",
    ]
    for days in WINDOWS_DAYS:
        over = frame(terminal, delay_us + days * DAY_US, delay_us)
        selected += [
            f"count(*) {over} AS terminal_count_{days}d",
            f"coalesce(sum(label) {over}, 0) AS terminal_fraud_{days}d",
        ]
    # Only quoted identifiers and integers are formatted into the query, never a value.
    time_us = dialect.epoch_us.format(q(columns.timestamp))
    keys = [columns.customer_id, columns.terminal_id]
    inputs = ", ".join(
        [
            *(q(name) for name in keep if name not in keys),
            *(q(name) for name in keys),
            f"CAST({q(columns.amount)} AS DOUBLE) AS amount",
            f"CAST({q(columns.label)} AS DOUBLE) AS label",
            f"{time_us} AS t_us",
        ]
    )
    payments = f"SELECT {inputs} FROM {source}"  # noqa: S608
    return f"SELECT {', '.join(selected)} FROM ({payments}) AS payments"  # noqa: S608


def aggregates_from(result: Mapping[str, np.ndarray]) -> WindowAggregates:
    """The query's result (its AGGREGATES columns by name) as WindowAggregates."""

    def get(name: str) -> np.ndarray:
        return np.asarray(result[name], dtype=float)

    return WindowAggregates(
        amount=get("amount"),
        weekday=get("weekday"),
        hour=get("hour"),
        customer_count={days: get(f"customer_count_{days}d") for days in WINDOWS_DAYS},
        customer_sum={days: get(f"customer_sum_{days}d") for days in WINDOWS_DAYS},
        customer_sum_squares=get("customer_sum_squares"),
        pair_count=get("pair_count"),
        terminal_count={days: get(f"terminal_count_{days}d") for days in WINDOWS_DAYS},
        terminal_fraud={days: get(f"terminal_fraud_{days}d") for days in WINDOWS_DAYS},
    )
