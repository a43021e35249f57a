"""The embedded payment state: in memory, written through to a SQLite file so that a restart
of the worker or the server resumes with every answered payment. One process owns the file:
more than one worker is refused at start-up (service.py). What it keeps, and how a window is
read, is said in serving/payments/payment_state.py."""

from __future__ import annotations

import logging
import sqlite3
import threading
from array import array
from bisect import bisect_left
from collections import deque
from pathlib import Path

import msgspec
import numpy as np

from model_store.payments import HISTORY_DAYS, WINDOWS_DAYS, WindowAggregates, state_horizon_days
from serving.payments.payment_state import (
    DAY_NS,
    Payment,
    aggregates_from_rows,
)

logger = logging.getLogger("fraud_bento.payment_state")
BUSY_TIMEOUT_MS = 5_000  # a commit waits this long for the maintenance thread's chunk
MAINTAIN_EVERY_S = 2.0
DELETE_CHUNK_ROWS = 1_000
NO_TIMES = array("q")  # a terminal with no fraud yet


class _Times(msgspec.Struct, gc=False):
    """Sorted times, with binary-search windows. A customer's also carry running totals of its
    amounts and of their squares (`sums[i]`: the entries before position i, plus a constant),
    so that a window's sum is one subtraction however many payments it holds. The totals grow
    with the key's lifetime volume; float64 keeps a window's sum exact to ~1e-12 relative even
    after years of a busy card."""

    times: array
    sums: array | None
    squares: array | None

    @classmethod
    def new(cls, with_sums: bool) -> _Times:
        if not with_sums:
            return cls(array("q"), None, None)
        return cls(array("q"), array("d", [0.0]), array("d", [0.0]))

    def add(self, time_ns: int, value: float = 0.0) -> None:
        times, sums, squares = self.times, self.sums, self.squares
        if not times or times[-1] <= time_ns:  # in time order: the usual case
            times.append(time_ns)
            if sums is not None:
                sums.append(sums[-1] + value)
                squares.append(squares[-1] + value * value)
            return
        position = bisect_left(times, time_ns)
        times.insert(position, time_ns)
        if sums is not None:
            for totals, added in ((sums, value), (squares, value * value)):
                totals.insert(position + 1, totals[position])
                for later in range(position + 1, len(totals)):
                    totals[later] += added

    def remove(self, time_ns: int) -> None:
        """(A series without totals: the labelled frauds.)"""
        position = bisect_left(self.times, time_ns)
        if position < len(self.times) and self.times[position] == time_ns:
            del self.times[position]

    def count(self, start_ns: int, end_ns: int) -> int:
        """How many entries are in [start, end)."""
        return bisect_left(self.times, end_ns) - bisect_left(self.times, start_ns)

    def forget_before(self, time_ns: int) -> None:
        cut = bisect_left(self.times, time_ns)
        if cut:
            del self.times[:cut]
            if self.sums is not None:
                del self.sums[:cut]
                del self.squares[:cut]


def _series(by_key: dict, key, with_sums: bool) -> _Times:
    """The key's series, made on first use (not with setdefault: that makes one each call)."""
    series = by_key.get(key)
    if series is None:
        series = by_key[key] = _Times.new(with_sums)
    return series


class EmbeddedState:
    """The embedded online state: in memory, written through to SQLite."""

    healthy = True  # nothing to reach
    local = True

    def __init__(self, path: Path, delay_days: int):
        self.delay_ns = delay_days * DAY_NS
        self.horizon_ns = state_horizon_days(delay_days) * DAY_NS
        self.latest_ns: int | None = None
        self._customers: dict[str, _Times] = {}
        self._pairs: dict[tuple[str, str], _Times] = {}
        self._terminals: dict[str, _Times] = {}
        self._frauds: dict[str, _Times] = {}
        self._payments: dict[str, tuple[Payment, int]] = {}  # id: the payment, its label (0/1)
        self._expiry: deque[tuple[int, str]] = deque()  # (time, id) in arrival order
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # A checkpoint syncs the file to disk (3-10 ms measured here): never in a request's commit.
        self._db.execute("PRAGMA wal_autocheckpoint=0")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS payments (transaction_id TEXT PRIMARY KEY, "
            "time_ns INTEGER NOT NULL, customer TEXT NOT NULL, terminal TEXT NOT NULL, "
            "amount REAL NOT NULL, label INTEGER)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS payments_time ON payments (time_ns)")
        self._load()
        self._closing = threading.Event()
        self._maintainer = threading.Thread(
            target=self._maintain, name="payment-state-file", daemon=True
        )
        self._maintainer.start()

    # -- reading ---------------------------------------------------------------------------
    def oldest_accepted_ns(self) -> int | None:
        """A payment older than this would need history already forgotten."""
        return None if self.latest_ns is None else self.latest_ns - self.horizon_ns

    def aggregates(self, payments: list[Payment]) -> WindowAggregates:
        """The window aggregates of each payment against the state (which must hold them)."""
        spans = [days * DAY_NS for days in WINDOWS_DAYS]
        history_span, delay = HISTORY_DAYS * DAY_NS, self.delay_ns
        empty_customer = [0.0] * (2 * len(spans) + 1)
        empty_terminal = [0.0] * (2 * len(spans))
        customers, pairs = self._customers, self._pairs
        terminals, frauds_by_terminal = self._terminals, self._frauds
        rows = []  # a flat list a payment: cheaper than setting numpy items one by one
        for payment in payments:
            t = payment.time_ns
            row = []
            customer = customers.get(payment.customer)
            if customer is None:
                row += empty_customer
            else:
                times, sums = customer.times, customer.sums
                end = bisect_left(times, t)
                for span in spans:
                    start = bisect_left(times, t - span, 0, end)
                    row += (end - start, sums[end] - sums[start])
                    if span == history_span:
                        squares = customer.squares[end] - customer.squares[start]
                row.append(squares)
            pair = pairs.get((payment.customer, payment.terminal))
            row.append(pair.count(t - history_span, t) if pair is not None else 0)
            terminal = terminals.get(payment.terminal)
            if terminal is None:
                row += empty_terminal
            else:
                window_end = t - delay
                times = terminal.times
                end = bisect_left(times, window_end)
                frauds = frauds_by_terminal.get(payment.terminal)
                fraud_times = frauds.times if frauds is not None else NO_TIMES
                fraud_end = bisect_left(fraud_times, window_end)
                for span in spans:
                    row += (
                        end - bisect_left(times, window_end - span, 0, end),
                        fraud_end - bisect_left(fraud_times, window_end - span, 0, fraud_end),
                    )
            rows.append(row)
        return aggregates_from_rows(payments, np.array(rows, dtype=float).reshape(len(rows), -1))

    def score_and_record(self, payments: list[Payment]) -> WindowAggregates:
        """Enter the payments (a transaction id already known counts once), then their
        aggregates: each sees every strictly earlier payment, in the state or in the batch."""
        with self._lock:
            new = {
                p.transaction_id: p for p in payments if p.transaction_id not in self._payments
            }.values()
            if new:
                self._db.execute("BEGIN")
                try:
                    self._db.executemany(
                        "INSERT INTO payments VALUES (?, ?, ?, ?, ?, NULL)",
                        [
                            (p.transaction_id, p.time_ns, p.customer, p.terminal, p.amount)
                            for p in new
                        ],
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                for payment in new:
                    self._enter(payment, None)
            aggregates = self.aggregates(payments)
            if new:  # after the aggregates: the batch's earliest payments still need it all
                self._forget_old()
            return aggregates

    # -- labels ----------------------------------------------------------------------------
    def label(self, labels: list[tuple[str, bool]]) -> int:
        """Record fraud labels by transaction id; returns how many named a payment held here."""
        with self._lock:
            known = [(tx, bool(fraud)) for tx, fraud in labels if tx in self._payments]
            if known:
                self._db.executemany(
                    "UPDATE payments SET label = ? WHERE transaction_id = ?",
                    [(int(fraud), tx) for tx, fraud in known],
                )
            for tx, fraud in known:
                self._set_label(tx, fraud)
            return len(known)

    def _set_label(self, transaction_id: str, fraud: bool) -> None:
        payment, before = self._payments[transaction_id]
        if before == int(fraud):
            return
        frauds = _series(self._frauds, payment.terminal, False)
        if fraud:
            frauds.add(payment.time_ns)
        else:
            frauds.remove(payment.time_ns)
        self._payments[transaction_id] = (payment, int(fraud))

    # -- bulk loading ----------------------------------------------------------------------
    def backfill(self, payments: list[Payment], labels: list[int | None]) -> int:
        """Load history (payments with their labels, None when not known yet); returns how
        many were new. Only the last horizon of the history is kept."""
        with self._lock:
            rows = [
                (p.transaction_id, p.time_ns, p.customer, p.terminal, p.amount, label)
                for p, label in zip(payments, labels, strict=True)
            ]
            before = self._db.total_changes
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO payments VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
            added = self._db.total_changes - before
        self._reset()
        self._load()
        return added

    def _reset(self) -> None:
        self._customers.clear()
        self._pairs.clear()
        self._terminals.clear()
        self._frauds.clear()
        self._payments.clear()
        self._expiry.clear()
        self.latest_ns = None

    def _load(self) -> None:
        (latest,) = self._db.execute("SELECT max(time_ns) FROM payments").fetchone()
        if latest is None:
            return
        cursor = self._db.execute(
            "SELECT transaction_id, time_ns, customer, terminal, amount, label FROM payments "
            "WHERE time_ns >= ? ORDER BY time_ns",
            (latest - self.horizon_ns,),
        )
        for tx, time_ns, customer, terminal, amount, label in cursor:
            self._enter(Payment(tx, time_ns, customer, terminal, amount), label)
        self._forget_old()

    # -- the state proper ------------------------------------------------------------------
    def _enter(self, payment: Payment, label: int | None) -> None:
        t = payment.time_ns
        _series(self._customers, payment.customer, True).add(t, payment.amount)
        _series(self._pairs, (payment.customer, payment.terminal), False).add(t)
        _series(self._terminals, payment.terminal, False).add(t)
        self._payments[payment.transaction_id] = (payment, 0)
        if label:
            self._set_label(payment.transaction_id, True)
        self._expiry.append((t, payment.transaction_id))
        if self.latest_ns is None or t > self.latest_ns:
            self.latest_ns = t

    def _forget_old(self) -> None:
        """Drop what no window can reach any more: payments older than the horizon (only the
        keys those payments touched are trimmed, so the cost follows the payments)."""
        cutoff = self.latest_ns - self.horizon_ns
        expiry = self._expiry
        customers, pairs, terminals = set(), set(), set()
        while expiry and expiry[0][0] < cutoff:
            _, tx = expiry.popleft()
            payment, _ = self._payments.pop(tx)
            customers.add(payment.customer)
            pairs.add((payment.customer, payment.terminal))
            terminals.add(payment.terminal)
        for keys, series_by_key in (
            (customers, self._customers),
            (pairs, self._pairs),
            (terminals, self._terminals),
            (terminals, self._frauds),
        ):
            for key in keys:
                series = series_by_key.get(key)
                if series is None:
                    continue
                series.forget_before(cutoff)
                if not series.times:
                    del series_by_key[key]

    def size(self) -> dict[str, int]:
        return {
            "payments": len(self._payments),
            "customers": len(self._customers),
            "terminals": len(self._terminals),
        }

    def _maintain(self) -> None:
        """Off the request path, every few seconds: delete the file's rows past the horizon, a
        chunk a transaction (a request's commit waits for one chunk at most), then checkpoint
        the write-ahead log (its sync to disk here, not in a request)."""
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            while not self._closing.wait(MAINTAIN_EVERY_S):
                try:
                    latest = self.latest_ns
                    deleted = DELETE_CHUNK_ROWS
                    while latest is not None and deleted == DELETE_CHUNK_ROWS:
                        deleted = db.execute(
                            "DELETE FROM payments WHERE rowid IN (SELECT rowid FROM payments "
                            "WHERE time_ns < ? LIMIT ?)",
                            (latest - self.horizon_ns, DELETE_CHUNK_ROWS),
                        ).rowcount
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as error:  # busy for long, a full disk: next round
                    logger.warning(
                        "payment state file %s: maintenance put off: %s", self._path, error
                    )
        finally:
            db.close()

    def close(self) -> None:
        self._closing.set()
        self._maintainer.join(timeout=10)
        self._db.close()
