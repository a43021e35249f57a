"""Online feature state: every scored payment's history, kept so that the payment features
(model_store/payments.py) are computed for a new payment exactly as training computes them.

What is kept, per key, as time-sorted arrays (nanoseconds since the epoch):
- each customer's payments and amounts for the longest customer window;
- each customer-terminal pair's payment times (has the customer paid here recently?);
- each terminal's payment times, and apart the times of its payments labelled fraud, for the
  longest terminal window plus the label delay.
Every window is two binary searches (a customer's amount sums two subtractions of running totals),
so a key with a million payments costs microseconds, not a scan.

Two stores keep it behind one interface (`PaymentStore`, here): the embedded one
(serving/payments/embedded_state.py), in memory and written through to a SQLite file, and Redis
(serving/payments/redis_state.py), shared by every worker and replica.
"""

from __future__ import annotations

from typing import Protocol

import msgspec
import numpy as np

from model_store.payments import (
    EPOCH_WEEKDAY,
    WINDOWS_DAYS,
    WindowAggregates,
)
from serving.contract.refusals import Unavailable

DAY_NS = 86_400 * 10**9
HOUR_NS = 3_600 * 10**9


class Payment(msgspec.Struct, frozen=True, gc=False):
    """One payment as the state keeps it. Untracked by the garbage collector (it holds only
    scalars), like the rest of the state: a state of millions of payments adds nothing to a
    collection's walk."""

    transaction_id: str
    time_ns: int
    customer: str
    terminal: str
    amount: float


class StateUnavailable(Unavailable):
    """The state store cannot be reached: the payment is not counted; retry (HTTP 503)."""


class PaymentStore(Protocol):
    """What /score and the backfill need of a state store. Each call is whole: a payment is
    either fully entered or not at all."""

    healthy: bool  # the last call reached the store
    # Calls are memory work and a local file's append (microseconds): made on the event loop,
    # where a thread's hand-off would cost more than the call (p99 at 200 req/s: 6.1 ms through
    # a thread, 1.5 ms inline). A store across the network is called from a thread.
    local: bool

    def oldest_accepted_ns(self) -> int | None: ...

    def score_and_record(self, payments: list[Payment]) -> WindowAggregates: ...

    def label(self, labels: list[tuple[str, bool]]) -> int: ...

    def backfill(self, payments: list[Payment], labels: list[int | None]) -> int: ...

    def size(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def calendar_aggregates(payments: list[Payment]) -> WindowAggregates:
    """Empty windows, with each payment's amount, weekday and hour filled in."""
    result = WindowAggregates.empty(len(payments))
    for row, payment in enumerate(payments):
        t = payment.time_ns
        result.amount[row] = payment.amount
        result.weekday[row] = (t // DAY_NS + EPOCH_WEEKDAY) % 7
        result.hour[row] = (t % DAY_NS) // HOUR_NS
    return result


def aggregates_from_rows(payments: list[Payment], rows: np.ndarray) -> WindowAggregates:
    """A store's answer, a row a payment, as WindowAggregates. Both stores answer in this
    layout: per customer window (WINDOWS_DAYS order) its count and sum, then the customer's sum
    of squares over HISTORY_DAYS, the pair count, then per terminal window its count and
    frauds."""
    result = calendar_aggregates(payments)
    windows = len(WINDOWS_DAYS)
    for index, days in enumerate(WINDOWS_DAYS):
        result.customer_count[days] = rows[:, 2 * index]
        result.customer_sum[days] = rows[:, 2 * index + 1]
        result.terminal_count[days] = rows[:, 2 * windows + 2 + 2 * index]
        result.terminal_fraud[days] = rows[:, 2 * windows + 3 + 2 * index]
    result.customer_sum_squares = rows[:, 2 * windows]
    result.pair_count = rows[:, 2 * windows + 1]
    return result


def table_payments(table, columns) -> tuple[list[Payment], list[int | None]]:
    """A payment table (a pandas DataFrame in the columns `columns` names) as payments and their
    labels (None where the label column is missing or empty), for backfills."""
    import pandas as pd

    times = pd.to_datetime(table[columns.timestamp])
    if times.dt.tz is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    payments = [
        Payment(str(tx), int(t), str(customer), str(terminal), float(amount))
        for tx, t, customer, terminal, amount in zip(
            table[columns.transaction_id].to_numpy(),
            times.to_numpy().astype("datetime64[ns]").astype(np.int64),
            table[columns.customer_id].to_numpy(),
            table[columns.terminal_id].to_numpy(),
            table[columns.amount].to_numpy(dtype=float),
            strict=True,
        )
    ]
    if columns.label not in table:
        return payments, [None] * len(payments)
    labels = table[columns.label].astype("Int64")
    return payments, [None if pd.isna(label) else int(label) for label in labels]
