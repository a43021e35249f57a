"""The online feature state in Redis, shared by every worker and replica.

The same state as the embedded store (serving/payments/embedded_state.py), as Redis sorted sets
scored by time in microseconds (exact in a double; request times carry microseconds):
- `c:{card}` the card's payments, member `{id}|{amount}`;
- `p:{len(card)}:{card}{terminal}` the card's payments at the terminal;
- `t:{terminal}` the terminal's payments, `f:{terminal}` those labelled fraud;
- `tx:{id}` the payment itself (`{time}|{terminal}`), set only if absent: a retried id counts once;
- `latest` the latest payment time, from which the horizon is counted.
Entering a batch and reading its windows is one Lua script, which Redis runs atomically: two
replicas scoring the same card at the same moment are serialized, and a payment is either fully
entered or not at all. A request is scored in calls of at most PAYMENTS_PER_CALL payments, in time
order (which gives each payment the windows one call would: a window reads only earlier times).
Keys untouched for the horizon expire.
"""

from __future__ import annotations

import numpy as np
import redis

from model_store.payments import HISTORY_DAYS, WINDOWS_DAYS, WindowAggregates, state_horizon_days
from serving.payments.payment_state import Payment, StateUnavailable, aggregates_from_rows

_MICROSECONDS_PER_DAY = 86_400_000_000
# A script's time grows with its payments, and Redis runs nothing else meanwhile. Measured on the
# tests' small table (2 cores): 213-268 us of Redis CPU a payment, so 100 payments a call take
# 25 ms (134 ms at most with the machine busy), where a request of 1,000 took 290 ms and passed
# payments.redis_timeout_s (0.5 s) once the machine was busy, and held up every other replica.
PAYMENTS_PER_CALL = 100

_SCORE = """
local p, horizon, delay, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local n, want = tonumber(ARGV[5]), ARGV[6] == '1'
local DAY, HIST = @DAY@, @HISTORY@
local W = {@WINDOWS@}
local function f(x) return string.format('%.0f', x) end
local function pair(c, term) return p .. 'p:' .. #c .. ':' .. c .. term end
local latest = tonumber(redis.call('GET', p .. 'latest') or '-1')
local touched = {}
for i = 0, n - 1 do
  local a = 7 + i * 5
  local tx, ts, c, term, amount = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  if redis.call('SET', p .. 'tx:' .. tx, ts .. '|' .. term, 'NX', 'PX', ttl) then
    redis.call('ZADD', p .. 'c:' .. c, ts, tx .. '|' .. amount)
    redis.call('ZADD', pair(c, term), ts, tx)
    redis.call('ZADD', p .. 't:' .. term, ts, tx)
    touched[p .. 'c:' .. c] = true
    touched[pair(c, term)] = true
    touched[p .. 't:' .. term] = true
    if tonumber(ts) > latest then latest = tonumber(ts) end
  end
end
local out = {}  -- a row a payment, in the layout of payment_state.aggregates_from_rows
for i = 0, (want and n or 0) - 1 do
  local a = 7 + i * 5
  local ts, c, term = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local t = tonumber(ts)
  local history = redis.call('ZRANGEBYSCORE', p .. 'c:' .. c, f(t - W[#W] * DAY), '(' .. ts,
    'WITHSCORES')
  local count, sum, squares = {}, {}, 0
  for j = 1, #W do count[j], sum[j] = 0, 0 end
  for k = 1, #history, 2 do  -- one pass: each payment parsed once, added to its windows
    local when = tonumber(history[k + 1])
    local v = tonumber(string.match(history[k], '|([^|]*)$'))
    for j, w in ipairs(W) do
      if when >= t - w * DAY then
        count[j], sum[j] = count[j] + 1, sum[j] + v
        if w == HIST then squares = squares + v * v end
      end
    end
  end
  for j = 1, #W do
    out[#out + 1] = count[j]
    out[#out + 1] = string.format('%.17g', sum[j])
  end
  out[#out + 1] = string.format('%.17g', squares)
  out[#out + 1] = redis.call('ZCOUNT', pair(c, term), f(t - HIST * DAY), '(' .. ts)
  for _, w in ipairs(W) do
    local low, high = f(t - delay - w * DAY), '(' .. f(t - delay)
    out[#out + 1] = redis.call('ZCOUNT', p .. 't:' .. term, low, high)
    out[#out + 1] = redis.call('ZCOUNT', p .. 'f:' .. term, low, high)
  end
end
if latest >= 0 then
  redis.call('SET', p .. 'latest', f(latest))
  local cutoff = '(' .. f(latest - horizon)
  for key in pairs(touched) do
    redis.call('ZREMRANGEBYSCORE', key, '-inf', cutoff)
    redis.call('PEXPIRE', key, ttl)
  end
end
return out
"""
for _name, _value in (
    ("@DAY@", _MICROSECONDS_PER_DAY),
    ("@HISTORY@", HISTORY_DAYS),
    ("@WINDOWS@", ", ".join(map(str, WINDOWS_DAYS))),
):
    _SCORE = _SCORE.replace(_name, str(_value))

_LABEL = """
local p, ttl, matched = ARGV[1], ARGV[2], 0
for i = 3, #ARGV, 2 do
  local held = redis.call('GET', p .. 'tx:' .. ARGV[i])
  if held then
    matched = matched + 1
    local ts, term = string.match(held, '^([^|]*)|(.*)$')
    if ARGV[i + 1] == '1' then
      redis.call('ZADD', p .. 'f:' .. term, ts, ARGV[i])
      redis.call('PEXPIRE', p .. 'f:' .. term, ttl)
    else
      redis.call('ZREM', p .. 'f:' .. term, ARGV[i])
    end
  end
end
return matched
"""


class RedisState:
    """The online state in Redis (one Redis, or a primary: the scripts address keys by name)."""

    local = False

    def __init__(self, url: str, prefix: str, delay_days: int, timeout_s: float):
        self.url, self.prefix = url, prefix
        self.delay_us = delay_days * _MICROSECONDS_PER_DAY
        self.horizon_us = state_horizon_days(delay_days) * _MICROSECONDS_PER_DAY
        self.ttl_ms = self.horizon_us // 1000
        self.healthy = True
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._score = self._redis.register_script(_SCORE)
        self._label = self._redis.register_script(_LABEL)

    def _call(self, operation):
        try:
            result = operation()
        except (redis.ConnectionError, redis.TimeoutError) as error:
            self.healthy = False
            raise StateUnavailable(
                f"the payment state store at payments.redis_url cannot be reached ({error}); "
                "this request's payments were not all counted: retry it (a payment counts once)"
            ) from error
        self.healthy = True
        return result

    def oldest_accepted_ns(self) -> int | None:
        latest = self._call(lambda: self._redis.get(self.prefix + "latest"))
        return None if latest is None else (int(latest) - self.horizon_us) * 1000

    def _run(self, payments: list[Payment], want: bool) -> list:
        arguments: list = [self.prefix, self.horizon_us, self.delay_us, self.ttl_ms]
        arguments += [len(payments), int(want)]
        for payment in payments:
            arguments += [
                payment.transaction_id,
                payment.time_ns // 1000,
                payment.customer,
                payment.terminal,
                repr(payment.amount),  # the shortest text that reads back as the same double
            ]
        return self._call(lambda: self._score(args=arguments))

    def score_and_record(self, payments: list[Payment]) -> WindowAggregates:
        times = np.fromiter((p.time_ns for p in payments), dtype=np.int64, count=len(payments))
        order = np.argsort(times, kind="stable")
        in_time_order = []  # counts, and sums as text, a row a payment
        for first in range(0, len(order), PAYMENTS_PER_CALL):
            chunk = order[first : first + PAYMENTS_PER_CALL]
            values = self._run([payments[i] for i in chunk], want=True)
            in_time_order.append(np.array(values, dtype=float).reshape(len(chunk), -1))
        rows = np.empty((len(payments), in_time_order[0].shape[1]))
        rows[order] = np.concatenate(in_time_order)  # back in the request's order
        return aggregates_from_rows(payments, rows)

    def label(self, labels: list[tuple[str, bool]]) -> int:
        if not labels:
            return 0
        arguments: list = [self.prefix, self.ttl_ms]
        for transaction_id, fraud in labels:
            arguments += [transaction_id, int(bool(fraud))]
        return int(self._call(lambda: self._label(args=arguments)))

    def backfill(self, payments: list[Payment], labels: list[int | None], chunk: int = 5_000):
        """Enter history in time order, chunk by chunk, then its fraud labels."""
        before = self.size()["payments"]
        ordered = sorted(zip(payments, labels, strict=True), key=lambda pair: pair[0].time_ns)
        for first in range(0, len(ordered), chunk):
            self._run([payment for payment, _ in ordered[first : first + chunk]], want=False)
        frauds = [(p.transaction_id, True) for p, label in ordered if label]
        for first in range(0, len(frauds), chunk):
            self.label(frauds[first : first + chunk])
        return self.size()["payments"] - before

    def size(self) -> dict[str, int]:
        def count(pattern: str) -> int:
            return sum(1 for _ in self._redis.scan_iter(self.prefix + pattern, count=10_000))

        return self._call(
            lambda: {
                "payments": count("tx:*"),
                "customers": count("c:*"),
                "terminals": count("t:*"),
            }
        )

    def close(self) -> None:
        self._redis.close()
