"""Deployment health shared by workers: cooldowns, RPM/TPM limits, recent outcome stats.

A deployment (one model on one provider/key/region, e.g. "gpt-4o-mini@openai-eu") that fails
`allowed_fails` times within `window_s` seconds cools down for `cooldown_s` and is skipped by
the router until then. Failures expire with their window; `record_success` deliberately does
not reset them (as LiteLLM's Router): under concurrency a deployment failing every other call
would otherwise never reach `allowed_fails`. Entering a cooldown clears the failure count, so
the deployment starts afresh when it ends, and failures reported during a cooldown (calls that
were already in flight) are not counted.

In-process serves one worker; Redis (one Lua script per operation) makes every worker see the
same cooldowns, limits and stats. Rate limits live in `pipeline.state.ratelimit`.
`pipeline.state.factory` picks the backend (over the Redis client the other state shares).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.state.ratelimit import InProcessRateLimits, RateDecision, RedisRateLimits
from pipeline.state.redis_client import connect

__all__ = [
    "DeploymentStats",
    "HealthState",
    "InProcessHealth",
    "RateDecision",
    "RedisHealth",
]

STATS_SIZE = 200  # outcomes kept per deployment
STATS_WINDOW_S = 300.0  # ... and only those of the last five minutes count
COOLDOWN_VIEW_S = 0.25  # how stale a worker's view of cooldowns started elsewhere may be


@dataclass(frozen=True, slots=True)
class DeploymentStats:
    """Recent outcomes for an operator table. p50 is over successful calls only: fast 429s or
    connection errors would otherwise make a broken deployment look fast."""

    calls: int
    errors: int
    error_rate: float
    p50_latency_ms: float | None


def summarize(outcomes: Iterable[tuple[bool, float]]) -> DeploymentStats:
    items = list(outcomes)
    errors = sum(1 for ok, _ in items if not ok)
    ok_latencies = [ms for ok, ms in items if ok]
    return DeploymentStats(
        calls=len(items),
        errors=errors,
        error_rate=errors / len(items) if items else 0.0,
        p50_latency_ms=statistics.median(ok_latencies) if ok_latencies else None,
    )


class HealthState(Protocol):
    async def record_failure(self, deployment: str, *, allowed_fails: int, window_s: float, cooldown_s: float) -> bool:
        """Count a failure; True only for the failure that started a cooldown (log it once)."""
        ...

    async def record_success(self, deployment: str) -> None:
        """Deliberately a no-op for cooldowns: failures expire with their window instead."""
        ...

    async def cooling_down(self, deployments: Sequence[str]) -> dict[str, float]:
        """Deployments now in cooldown -> remaining seconds (one round trip for all)."""
        ...

    async def clear(self, deployment: str) -> None:
        """End a cooldown and forget counted failures (operator action); limits/stats stay."""
        ...

    async def try_acquire(self, deployment: str, *, rpm: int | None, tpm: int | None, tokens: int) -> RateDecision:
        """Atomically check RPM/TPM over the rolling window and, if allowed, count the call."""
        ...

    async def adjust_tokens(self, deployment: str, delta: int) -> None:
        """Correct the estimated tokens once actual usage is known (actual - estimate)."""
        ...

    async def usage(self, deployments: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(requests, tokens) counted in the current window."""
        ...

    async def record_outcome(self, deployment: str, ok: bool, latency_ms: float) -> None: ...

    async def stats(self, deployments: Sequence[str]) -> dict[str, DeploymentStats]: ...

    async def close(self) -> None: ...


def _check_failure(deployment: str, allowed_fails: int, window_s: float, cooldown_s: float) -> None:
    if not deployment:
        raise ValueError("deployment must be non-empty")
    if allowed_fails < 1 or not window_s > 0 or not cooldown_s > 0:
        raise ValueError("need allowed_fails >= 1, window_s > 0 and cooldown_s > 0")


class InProcessHealth(InProcessRateLimits):
    """One worker's health state. No method body awaits, so under asyncio each call is atomic."""

    def __init__(
        self,
        *,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        stats_size: int = STATS_SIZE,
        stats_window_s: float = STATS_WINDOW_S,
    ) -> None:
        super().__init__(window_s=window_s, clock=clock)
        self._failures: dict[str, deque[float]] = {}
        self._cooldown_until: dict[str, float] = {}
        self._outcomes: dict[str, deque[tuple[float, bool, float]]] = {}
        self._stats_size = stats_size
        self._stats_window = stats_window_s

    async def record_failure(self, deployment: str, *, allowed_fails: int, window_s: float, cooldown_s: float) -> bool:
        _check_failure(deployment, allowed_fails, window_s, cooldown_s)
        now = self._clock()
        if self._cooldown_until.get(deployment, now) > now:
            return False
        fails = self._failures.setdefault(deployment, deque())
        while fails and fails[0] <= now - window_s:
            fails.popleft()
        fails.append(now)
        if len(fails) < allowed_fails:
            return False
        fails.clear()
        self._cooldown_until[deployment] = now + cooldown_s
        return True

    async def record_success(self, deployment: str) -> None:
        return None

    async def cooling_down(self, deployments: Sequence[str]) -> dict[str, float]:
        now = self._clock()
        return {d: until - now for d in deployments if (until := self._cooldown_until.get(d, now)) > now}

    async def clear(self, deployment: str) -> None:
        self._failures.pop(deployment, None)
        self._cooldown_until.pop(deployment, None)

    async def record_outcome(self, deployment: str, ok: bool, latency_ms: float) -> None:
        ring = self._outcomes.setdefault(deployment, deque(maxlen=self._stats_size))
        ring.append((self._clock(), bool(ok), float(latency_ms)))

    async def stats(self, deployments: Sequence[str]) -> dict[str, DeploymentStats]:
        since = self._clock() - self._stats_window
        return {
            d: summarize((ok, ms) for t, ok, ms in self._outcomes.get(d, ()) if t > since) for d in deployments
        }

    async def close(self) -> None:
        self._failures.clear()
        self._cooldown_until.clear()
        self._outcomes.clear()


# KEYS[1] = failure times (zset), KEYS[2] = cooldown marker (PX TTL).
# ARGV: allowed_fails, window_ms, cooldown_ms, member. Reply 1 = this failure started a cooldown.
_FAIL = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], now, ARGV[4])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  return 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
"""
# KEYS[1] = outcome list (newest first); ARGV: ok (1/0), latency_ms, size, ttl_ms.
_OUTCOME = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('LPUSH', KEYS[1], string.format('%d', now) .. ' ' .. ARGV[1] .. ' ' .. ARGV[2])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[3]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisHealth(RedisRateLimits):
    """Health shared by every worker through one Redis; time is Redis TIME, never a worker's.

    Keys under `{namespace}:health:`: `fails:{d}` (zset of failure times, expires with the
    window), `cooldown:{d}` (marker whose PX TTL *is* the cooldown), `outcomes:{d}` (list of
    "ms ok latency", LPUSH + LTRIM to `stats_size`). Scripts touch one deployment's keys; the
    batch reads (`cooling_down`, `stats`, `usage`) span deployments, so like the other stores
    this expects a single Redis (or a primary with replicas), not Redis Cluster.

    A client passed in is the caller's to close (the shared-state factory shares one pool);
    one this made from `url` is closed by `close()`.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "llm-pipeline",
        window_s: float = 60.0,
        stats_size: int = STATS_SIZE,
        stats_window_s: float = STATS_WINDOW_S,
        max_connections: int = 100,
        client: Any = None,
        cooldown_view_s: float = COOLDOWN_VIEW_S,
    ) -> None:
        self._owns_client = client is None
        if client is None:
            client = connect(url, max_connections=max_connections)
        super().__init__(client, namespace=namespace, window_s=window_s)
        self._stats_size = stats_size
        self._stats_window_ms = _ms(stats_window_s)
        self._fail = client.register_script(_FAIL)
        self._outcome = client.register_script(_OUTCOME)
        # deployment -> (monotonic time read, monotonic end of its cooldown or 0.0)
        self._cooldown_view: dict[str, tuple[float, float]] = {}
        self._cooldown_view_s = cooldown_view_s

    def _key(self, kind: str, deployment: str) -> str:
        return f"{self._ns}:health:{kind}:{deployment}"

    async def record_failure(self, deployment: str, *, allowed_fails: int, window_s: float, cooldown_s: float) -> bool:
        _check_failure(deployment, allowed_fails, window_s, cooldown_s)
        keys = [self._key("fails", deployment), self._key("cooldown", deployment)]
        started = await self._fail(keys=keys, args=[allowed_fails, _ms(window_s), _ms(cooldown_s), uuid.uuid4().hex])
        if int(started):
            now = time.monotonic()
            self._cooldown_view[deployment] = (now, now + cooldown_s)
        return bool(int(started))

    async def record_success(self, deployment: str) -> None:
        return None

    async def cooling_down(self, deployments: Sequence[str]) -> dict[str, float]:
        """Read through a view at most `cooldown_view_s` old: one round trip per deployment and
        view period instead of one per request. A cooldown this worker starts is seen at once,
        one started by another worker within the view period."""
        now = time.monotonic()
        view = self._cooldown_view
        stale = [d for d in deployments if (seen := view.get(d)) is None or now - seen[0] > self._cooldown_view_s]
        if stale:
            async with self._redis.pipeline(transaction=False) as pipe:
                for d in stale:
                    pipe.pttl(self._key("cooldown", d))
                ttls = await pipe.execute()
            now = time.monotonic()
            for d, ms in zip(stale, ttls, strict=False):
                view[d] = (now, now + int(ms) / 1000 if int(ms) > 0 else 0.0)
        return {d: until - now for d in deployments if (until := view[d][1]) > now}

    async def clear(self, deployment: str) -> None:
        await self._redis.delete(self._key("fails", deployment), self._key("cooldown", deployment))
        self._cooldown_view.pop(deployment, None)

    async def record_outcome(self, deployment: str, ok: bool, latency_ms: float) -> None:
        args = [1 if ok else 0, repr(float(latency_ms)), self._stats_size, self._stats_window_ms]
        await self._outcome(keys=[self._key("outcomes", deployment)], args=args)

    async def stats(self, deployments: Sequence[str]) -> dict[str, DeploymentStats]:
        if not deployments:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.time()
            for d in deployments:
                pipe.lrange(self._key("outcomes", d), 0, -1)
            (sec, usec), *lists = await pipe.execute()
        since = int(sec) * 1000 + int(usec) // 1000 - self._stats_window_ms
        out = {}
        for d, raw in zip(deployments, lists, strict=False):
            rows = (entry.decode().split(" ") for entry in raw)
            out[d] = summarize((ok == "1", float(ms)) for t, ok, ms in rows if int(t) > since)
        return out

    async def close(self) -> None:
        if self._owns_client:
            await self._redis.aclose()
