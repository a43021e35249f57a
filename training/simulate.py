"""A seeded payment-transaction simulator.

Follows the published design of the Fraud Detection Handbook's simulator (Le Borgne et al.):
customers and terminals on a 100x100 grid, each customer using the terminals within a radius,
Poisson daily transaction counts, normally distributed amounts per customer profile, and three
time-dependent fraud scenarios. The implementation is our own and fully vectorised.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from settings import ColumnsConfig, SimulatorConfig

GRID_SIZE = 100.0
TERMINAL_RADIUS = 5.0
SECONDS_PER_DAY = 86_400
START_DATE = pd.Timestamp("2026-04-01")

LARGE_AMOUNT = 220.0
TERMINAL_COMPROMISE_DAYS = 28
TERMINALS_COMPROMISED_PER_DAY_SHARE = 0.0002
STOLEN_TX_PER_TERMINAL_DAY = 1.0
CUSTOMER_COMPROMISE_DAYS = 14
CUSTOMERS_COMPROMISED_PER_DAY_SHARE = 0.0006
CUSTOMER_FRAUD_SHARE = 1 / 3
CUSTOMER_FRAUD_MULTIPLIER = 5.0

DRIFT_AMOUNT_MULTIPLIER = 1.6
DRIFT_NIGHT_SHARE = 0.35

SCENARIO_NONE, SCENARIO_LARGE_AMOUNT, SCENARIO_TERMINAL, SCENARIO_CUSTOMER = 0, 1, 2, 3


@dataclass(frozen=True)
class Profiles:
    customer_xy: np.ndarray
    customer_mean_amount: np.ndarray
    customer_std_amount: np.ndarray
    customer_tx_per_day: np.ndarray
    terminal_xy: np.ndarray
    terminal_offsets: np.ndarray  # CSR layout: terminals of customer c are
    terminal_index: np.ndarray  # terminal_index[terminal_offsets[c]:terminal_offsets[c + 1]]


def make_profiles(cfg: SimulatorConfig, rng: np.random.Generator) -> Profiles:
    customer_xy = rng.uniform(0, GRID_SIZE, size=(cfg.customers, 2))
    mean_amount = rng.uniform(5, 100, size=cfg.customers)
    terminal_xy = rng.uniform(0, GRID_SIZE, size=(cfg.terminals, 2))
    offsets = [0]
    index: list[np.ndarray] = []
    for xy in customer_xy:
        near = np.flatnonzero(np.hypot(*(terminal_xy - xy).T) < TERMINAL_RADIUS)
        index.append(near)
        offsets.append(offsets[-1] + len(near))
    return Profiles(
        customer_xy=customer_xy,
        customer_mean_amount=mean_amount,
        customer_std_amount=mean_amount / 2,
        customer_tx_per_day=rng.uniform(0, 4, size=cfg.customers),
        terminal_xy=terminal_xy,
        terminal_offsets=np.asarray(offsets),
        terminal_index=np.concatenate(index) if index else np.empty(0, dtype=int),
    )


def _genuine_transactions(
    cfg: SimulatorConfig, profiles: Profiles, rng: np.random.Generator
) -> pd.DataFrame:
    counts = rng.poisson(profiles.customer_tx_per_day[:, None], size=(cfg.customers, cfg.days))
    n_terminals = np.diff(profiles.terminal_offsets)
    counts[n_terminals == 0] = 0
    customer = np.repeat(np.repeat(np.arange(cfg.customers), cfg.days), counts.ravel())
    day = np.repeat(np.tile(np.arange(cfg.days), cfg.customers), counts.ravel())
    seconds = rng.normal(SECONDS_PER_DAY / 2, 20_000, size=len(customer))
    seconds = np.clip(seconds, 0, SECONDS_PER_DAY - 1)
    mean = profiles.customer_mean_amount[customer]
    amount = rng.normal(mean, profiles.customer_std_amount[customer])
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean[negative])
    pick = np.floor(rng.uniform(size=len(customer)) * n_terminals[customer]).astype(int)
    terminal = profiles.terminal_index[profiles.terminal_offsets[customer] + pick]
    return pd.DataFrame(
        {
            "customer": customer,
            "terminal": terminal,
            "day": day,
            "seconds": seconds,
            "amount": amount,
        }
    )


def _apply_drift(tx: pd.DataFrame, start_day: int, rng: np.random.Generator) -> None:
    drifted = tx["day"].to_numpy() >= start_day
    tx.loc[drifted, "amount"] *= DRIFT_AMOUNT_MULTIPLIER
    to_night = drifted & (rng.uniform(size=len(tx)) < DRIFT_NIGHT_SHARE)
    tx.loc[to_night, "seconds"] = rng.uniform(0, 6 * 3600, size=int(to_night.sum()))


def _compromised_each_day(
    days: int, population: int, share: float, rng: np.random.Generator
) -> list[tuple[int, np.ndarray]]:
    """For each day, the entities newly compromised on that day."""
    drawn = []
    for day in range(days):
        size = min(int(rng.poisson(population * share)), population)
        drawn.append((day, rng.choice(population, size=size, replace=False)))
    return drawn


def _stolen_card_transactions(
    cfg: SimulatorConfig, profiles: Profiles, rng: np.random.Generator
) -> pd.DataFrame:
    """Scenario 2: criminals run stolen card details through compromised terminals.

    Each compromised terminal processes, for some weeks, extra transactions made with the cards of
    customers from anywhere on the grid, at the victims' usual amounts.
    """
    parts = []
    for start, terminals in _compromised_each_day(
        cfg.days, cfg.terminals, TERMINALS_COMPROMISED_PER_DAY_SHARE, rng
    ):
        days = np.arange(start, min(start + TERMINAL_COMPROMISE_DAYS, cfg.days))
        counts = rng.poisson(STOLEN_TX_PER_TERMINAL_DAY, size=(len(terminals), len(days)))
        terminal = np.repeat(np.repeat(terminals, len(days)), counts.ravel())
        day = np.repeat(np.tile(days, len(terminals)), counts.ravel())
        customer = rng.integers(0, cfg.customers, size=len(terminal))
        seconds = np.clip(
            rng.normal(SECONDS_PER_DAY / 2, 20_000, size=len(terminal)), 0, SECONDS_PER_DAY - 1
        )
        amount = np.abs(
            rng.normal(
                profiles.customer_mean_amount[customer], profiles.customer_std_amount[customer]
            )
        )
        parts.append(
            pd.DataFrame(
                {
                    "customer": customer,
                    "terminal": terminal,
                    "day": day,
                    "seconds": seconds,
                    "amount": amount,
                }
            )
        )
    stolen = pd.concat(parts, ignore_index=True)
    stolen["scenario"] = np.int8(SCENARIO_TERMINAL)
    return stolen


def _compromise_customers(tx: pd.DataFrame, cfg: SimulatorConfig, rng: np.random.Generator) -> None:
    """Scenario 3: for some days a share of a compromised customer's payments is inflated."""
    day = tx["day"].to_numpy()
    customer = tx["customer"].to_numpy()
    scenario = tx["scenario"].to_numpy().copy()
    amount = tx["amount"].to_numpy().copy()
    for start, customers in _compromised_each_day(
        cfg.days, cfg.customers, CUSTOMERS_COMPROMISED_PER_DAY_SHARE, rng
    ):
        window = np.flatnonzero(
            np.isin(customer, customers) & (day >= start) & (day < start + CUSTOMER_COMPROMISE_DAYS)
        )
        stolen = window[rng.uniform(size=len(window)) < CUSTOMER_FRAUD_SHARE]
        stolen = stolen[scenario[stolen] == SCENARIO_NONE]
        amount[stolen] *= CUSTOMER_FRAUD_MULTIPLIER
        scenario[stolen] = SCENARIO_CUSTOMER
    tx["amount"] = amount
    tx["scenario"] = scenario


def simulate(cfg: SimulatorConfig, columns: ColumnsConfig | None = None) -> pd.DataFrame:
    """A transaction table in the column names of `columns`, sorted by time, ids from 0."""
    columns = columns or ColumnsConfig()
    rng = np.random.default_rng(cfg.seed)
    profiles = make_profiles(cfg, rng)
    tx = _genuine_transactions(cfg, profiles, rng)
    tx["scenario"] = np.int8(SCENARIO_NONE)
    tx = pd.concat([tx, _stolen_card_transactions(cfg, profiles, rng)], ignore_index=True)
    if cfg.drift_start_day is not None:
        _apply_drift(tx, cfg.drift_start_day, rng)
    _compromise_customers(tx, cfg, rng)
    large = (tx["amount"] > LARGE_AMOUNT) & (tx["scenario"] == SCENARIO_NONE)
    tx.loc[large, "scenario"] = np.int8(SCENARIO_LARGE_AMOUNT)
    tx = tx.sort_values(["day", "seconds"], kind="stable").reset_index(drop=True)
    timestamp = START_DATE + pd.to_timedelta(
        tx["day"] * SECONDS_PER_DAY + tx["seconds"].astype(int), unit="s"
    )
    return pd.DataFrame(
        {
            columns.transaction_id: np.arange(len(tx), dtype=np.int64),
            columns.timestamp: timestamp.astype("datetime64[ns]"),
            columns.customer_id: tx["customer"].astype(np.int64),
            columns.terminal_id: tx["terminal"].astype(np.int64),
            columns.amount: tx["amount"].round(2),
            columns.label: (tx["scenario"] > 0).astype(np.int8),
            "tx_fraud_scenario": tx["scenario"].astype(np.int8),
        }
    )


def simulate_regions(
    cfg: SimulatorConfig, regions: int, columns: ColumnsConfig | None = None
) -> Iterator[pd.DataFrame]:
    """A large table a part at a time: `regions` independent worlds of `cfg`'s size (region k
    seeded `cfg.seed + k`), their customer, terminal and transaction ids following the previous
    region's. Scaling by regions keeps every customer's surroundings (terminals within reach,
    fraud scenarios) those of the default world, so tables of any size share one distribution,
    and memory holds one region. Each part is sorted by time; the parts together are not."""
    columns = columns or ColumnsConfig()
    transactions = 0
    for region in range(regions):
        part = simulate(cfg.model_copy(update={"seed": cfg.seed + region}), columns)
        part[columns.transaction_id] += transactions
        part[columns.customer_id] += region * cfg.customers
        part[columns.terminal_id] += region * cfg.terminals
        transactions += len(part)
        yield part
