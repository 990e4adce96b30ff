"""Spend ledgers: reserve before a call, settle after it, atomically across every budget it touches.

Amounts are integer micro-dollars (1e-6 USD) so additions never drift. A key's value is its
settled spend plus its open reservations, so `value + amount <= limit` on reserve guarantees that
concurrent requests overspend by at most what is in flight (the gap between estimate and actual).
In-process serves one worker; Redis (Lua, one script per operation) serves a fleet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.state.redis_client import connect

MICROS = 1_000_000
WINDOW_TTL_S = 40 * 86400  # longer than any window (a month), so old keys clean themselves up


def to_micros(usd: float) -> int:
    return round(usd * MICROS)


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One budget in one window, e.g. key 'tenant=acme:daily:2026-11-23', limit in micro-USD."""

    key: str
    name: str
    limit: int
    alert_at: int


@dataclass(frozen=True, slots=True)
class Reserved:
    """Every line took the amount. (A class, not `None`, so success reads as success.)"""


@dataclass(frozen=True, slots=True)
class Refused:
    """No line took the amount: `index` is the first line that would overflow, `value` its value now."""

    index: int
    value: int


@dataclass(frozen=True, slots=True)
class LedgerSettlement:
    """What settling did to the ledger, per line and in micro-USD: the lines that crossed their
    alert threshold for the first time in their window, and every line's value afterwards.
    (The budget stage turns it into a `SettleOutcome`: alerts to publish, spend per line.)"""

    crossed: list[BudgetLine]
    values: list[int]


class BudgetLedger(Protocol):
    async def reserve(self, lines: Sequence[BudgetLine], amount: int) -> Reserved | Refused:
        """Add `amount` to every line, or to none (then say which line would overflow)."""
        ...

    async def settle(self, lines: Sequence[BudgetLine], delta: int) -> LedgerSettlement:
        """Adjust a reservation by `delta` (actual - reserved), in the same round trip reading
        the new values and which lines crossed their alert threshold."""
        ...

    async def values(self, keys: Sequence[str]) -> list[int]: ...

    async def restore(self, key: str, value: int) -> None:
        """Raise a key to at least `value` (spend restored from ClickHouse at start-up)."""
        ...

    async def close(self) -> None: ...


class InProcessLedger:
    def __init__(self) -> None:
        self._values: dict[str, int] = {}
        self._alerted: set[str] = set()

    async def reserve(self, lines: Sequence[BudgetLine], amount: int) -> Reserved | Refused:
        for i, line in enumerate(lines):
            current = self._values.get(line.key, 0)
            if current + amount > line.limit:
                return Refused(i, current)
        for line in lines:
            self._values[line.key] = self._values.get(line.key, 0) + amount
        return Reserved()

    async def settle(self, lines: Sequence[BudgetLine], delta: int) -> LedgerSettlement:
        crossed, values = [], []
        for line in lines:
            value = self._values[line.key] = self._values.get(line.key, 0) + delta
            values.append(value)
            if value >= line.alert_at and line.key not in self._alerted:
                self._alerted.add(line.key)
                crossed.append(line)
        return LedgerSettlement(crossed, values)

    async def values(self, keys: Sequence[str]) -> list[int]:
        return [self._values.get(k, 0) for k in keys]

    async def restore(self, key: str, value: int) -> None:
        self._values[key] = max(self._values.get(key, 0), value)

    async def close(self) -> None:
        return None


_RESERVE = """
local amount = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local current = tonumber(redis.call('GET', key) or '0')
  if current + amount > tonumber(ARGV[i + 1]) then return {i, current} end
end
for _, key in ipairs(KEYS) do
  redis.call('INCRBY', key, amount)
  redis.call('EXPIRE', key, ARGV[#ARGV])
end
return nil
"""

_SETTLE = """
local delta = tonumber(ARGV[1])
local crossed, values = {}, {}
for i, key in ipairs(KEYS) do
  local value = redis.call('INCRBY', key, delta)
  redis.call('EXPIRE', key, ARGV[#ARGV])
  table.insert(values, value)
  if value >= tonumber(ARGV[i + 1]) then
    if redis.call('SET', key .. ':alerted', '1', 'NX', 'EX', ARGV[#ARGV]) then table.insert(crossed, i) end
  end
end
return {crossed, values}
"""

_RESTORE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
return 0
"""


class RedisLedger:
    """The same ledger shared by every worker through one Redis.

    A client passed in is the caller's to close (the shared-state factory shares one pool);
    one this ledger made from `url` is closed by `close()`.
    """

    def __init__(self, url: str, *, namespace: str = "llm-pipeline", client: Any = None) -> None:
        self._owns_client = client is None
        self._redis = connect(url) if client is None else client
        self._ns = namespace
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._restore = self._redis.register_script(_RESTORE)

    def _key(self, key: str) -> str:
        return f"{self._ns}:budget:{key}"

    async def reserve(self, lines: Sequence[BudgetLine], amount: int) -> Reserved | Refused:
        result = await self._reserve(
            keys=[self._key(line.key) for line in lines], args=[amount, *(line.limit for line in lines), WINDOW_TTL_S]
        )
        if not result:
            return Reserved()
        return Refused(int(result[0]) - 1, int(result[1]))

    async def settle(self, lines: Sequence[BudgetLine], delta: int) -> LedgerSettlement:
        crossed, values = await self._settle(
            keys=[self._key(line.key) for line in lines],
            args=[delta, *(line.alert_at for line in lines), WINDOW_TTL_S],
        )
        return LedgerSettlement([lines[int(i) - 1] for i in crossed or []], [int(v) for v in values])

    async def values(self, keys: Sequence[str]) -> list[int]:
        raw = await self._redis.mget([self._key(k) for k in keys]) if keys else []
        return [int(v) if v is not None else 0 for v in raw]

    async def restore(self, key: str, value: int) -> None:
        await self._restore(keys=[self._key(key)], args=[value, WINDOW_TTL_S])

    async def close(self) -> None:
        if self._owns_client:
            await self._redis.aclose()
