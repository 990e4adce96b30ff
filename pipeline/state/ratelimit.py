"""Per-deployment RPM/TPM limits over a rolling window, in-process or shared through Redis.

`try_acquire` checks and counts in one atomic step, so concurrent callers (even in different
processes) can never admit more than `rpm` requests in any window. Tokens are an estimate at
acquire time, corrected later by `adjust_tokens` (applied to the current moment, because the
caller holds no handle to its reservation: a negative correction therefore ages out a little
later than the reservation it corrects, which only ever errs towards refusing).

Requests are exact (one timestamp each). Tokens are exact in memory; in Redis they live in
buckets of window/60 (1 s for a 60 s window), and a bucket counts until its *end* leaves the
window, so Redis over-counts tokens by at most one bucket's age: conservative, never over.
A request larger than `tpm` is admitted into an otherwise empty window; refusing it would
block it forever.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Limit = Literal["rpm", "tpm"]


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Allowed (and already counted), or refused by `limit` with a retry-after estimate."""

    allowed: bool
    limit: Limit | None = None
    retry_after_s: float = 0.0

    @classmethod
    def ok(cls) -> RateDecision:
        return cls(True)

    @classmethod
    def refused(cls, limit: Limit, retry_after_s: float) -> RateDecision:
        return cls(False, limit, max(0.0, float(retry_after_s)))


def check_limits(deployment: str, rpm: int | None, tpm: int | None, tokens: int) -> None:
    if not deployment:
        raise ValueError("deployment must be non-empty")
    if (rpm is not None and rpm < 1) or (tpm is not None and tpm < 1) or tokens < 0:
        raise ValueError(f"need rpm, tpm None or >= 1 and tokens >= 0; got {rpm!r}, {tpm!r}, {tokens!r}")


class InProcessRateLimits:
    """Deques of request times and (time, tokens) entries per deployment, pruned on access.

    No method body awaits, so under asyncio each call is atomic.
    """

    def __init__(self, *, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not window_s > 0:
            raise ValueError("window_s must be > 0")
        self._window = window_s
        self._clock = clock
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, deque[tuple[float, int]]] = {}
        self._token_sum: dict[str, int] = {}

    def _prune(self, deployment: str, now: float) -> tuple[deque[float], deque[tuple[float, int]]]:
        start = now - self._window
        reqs = self._requests.setdefault(deployment, deque())
        while reqs and reqs[0] <= start:
            reqs.popleft()
        toks = self._tokens.setdefault(deployment, deque())
        while toks and toks[0][0] <= start:
            self._token_sum[deployment] -= toks.popleft()[1]
        return reqs, toks

    async def try_acquire(self, deployment: str, *, rpm: int | None, tpm: int | None, tokens: int) -> RateDecision:
        check_limits(deployment, rpm, tpm, tokens)
        now = self._clock()
        reqs, toks = self._prune(deployment, now)
        if rpm is not None and len(reqs) >= rpm:
            return RateDecision.refused("rpm", reqs[len(reqs) - rpm] + self._window - now)
        used = max(0, self._token_sum.get(deployment, 0))
        if tpm is not None and used > 0 and used + tokens > tpm:
            need, freed, at = used + tokens - tpm, 0, now
            for stamp, n in toks:  # oldest first: when will enough have aged out?
                at = stamp  # the answer, read after the loop: the stamp at which enough has aged out
                freed += n
                if freed >= need:
                    break
            return RateDecision.refused("tpm", at + self._window - now)
        reqs.append(now)
        self._add_tokens(deployment, now, tokens)
        return RateDecision.ok()

    def _add_tokens(self, deployment: str, now: float, tokens: int) -> None:
        if tokens:
            self._tokens.setdefault(deployment, deque()).append((now, tokens))
            self._token_sum[deployment] = self._token_sum.get(deployment, 0) + tokens

    async def adjust_tokens(self, deployment: str, delta: int) -> None:
        now = self._clock()
        self._prune(deployment, now)
        self._add_tokens(deployment, now, int(delta))

    async def usage(self, deployments: Sequence[str]) -> dict[str, tuple[int, int]]:
        now = self._clock()
        out = {}
        for d in deployments:
            reqs, _ = self._prune(d, now)
            out[d] = (len(reqs), max(0, self._token_sum.get(d, 0)))
        return out


# KEYS[1] = request times (zset, score = ms, member unique), KEYS[2] = token buckets (hash b -> n).
# ARGV: window_ms, bucket_ms, rpm (-1 = none), tpm (-1 = none), tokens, member.
# Replies {1, 0, 0} allowed, {0, 1, wait_ms} refused by rpm, {0, 2, wait_ms} refused by tpm.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
_ACQUIRE = _NOW + """
local window, bucket = tonumber(ARGV[1]), tonumber(ARGV[2])
local rpm, tpm, tokens = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if rpm >= 0 and count >= rpm then
  local oldest = redis.call('ZRANGE', KEYS[1], count - rpm, count - rpm, 'WITHSCORES')
  return {0, 1, tonumber(oldest[2]) + window - now}
end
local buckets, used, flat = {}, 0, redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  local b, n = tonumber(flat[i]), tonumber(flat[i + 1])
  if (b + 1) * bucket <= now - window then redis.call('HDEL', KEYS[2], flat[i])
  else used = used + n; table.insert(buckets, {b, n}) end
end
if tpm >= 0 and used > 0 and used + tokens > tpm then
  table.sort(buckets, function(x, y) return x[1] < y[1] end)
  local need, freed, wait = used + tokens - tpm, 0, 0
  for _, e in ipairs(buckets) do
    freed = freed + e[2]
    wait = (e[1] + 1) * bucket + window - now
    if freed >= need then break end
  end
  return {0, 2, wait}
end
redis.call('ZADD', KEYS[1], now, ARGV[6])
redis.call('PEXPIRE', KEYS[1], window)
if tokens ~= 0 then redis.call('HINCRBY', KEYS[2], string.format('%d', math.floor(now / bucket)), tokens) end
redis.call('PEXPIRE', KEYS[2], window + bucket)
return {1, 0, 0}
"""
# KEYS[1] = token buckets; ARGV: bucket_ms, window_ms, delta.
_ADJUST = _NOW + """
local bucket = tonumber(ARGV[1])
redis.call('HINCRBY', KEYS[1], string.format('%d', math.floor(now / bucket)), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + bucket)
return 1
"""
# KEYS = (requests, tokens) pairs; ARGV: window_ms, bucket_ms. Reply: flat (requests, tokens) pairs.
_USAGE = _NOW + """
local window, bucket, out = tonumber(ARGV[1]), tonumber(ARGV[2]), {}
for i = 1, #KEYS, 2 do
  local used, flat = 0, redis.call('HGETALL', KEYS[i + 1])
  for j = 1, #flat, 2 do
    if (tonumber(flat[j]) + 1) * bucket > now - window then used = used + tonumber(flat[j + 1]) end
  end
  table.insert(out, redis.call('ZCOUNT', KEYS[i], string.format('(%d', now - window), '+inf'))
  table.insert(out, math.max(used, 0))
end
return out
"""


class RedisRateLimits:
    """The same limits shared by every worker: one Lua script per operation, timed by Redis TIME.

    Keys: `{ns}:rl:req:{deployment}` (zset of request times) and `{ns}:rl:tok:{deployment}`
    (hash of token buckets); both expire with the window, so idle deployments leave nothing.
    """

    def __init__(self, redis: Any, *, namespace: str, window_s: float = 60.0) -> None:
        if not window_s > 0:
            raise ValueError("window_s must be > 0")
        self._ns = namespace
        self._window_ms = max(1, round(window_s * 1000))
        self._bucket_ms = max(1, self._window_ms // 60)
        self._redis = redis
        self._acquire = redis.register_script(_ACQUIRE)
        self._adjust = redis.register_script(_ADJUST)
        self._usage = redis.register_script(_USAGE)

    def _rl_keys(self, deployment: str) -> list[str]:
        return [f"{self._ns}:rl:req:{deployment}", f"{self._ns}:rl:tok:{deployment}"]

    async def try_acquire(self, deployment: str, *, rpm: int | None, tpm: int | None, tokens: int) -> RateDecision:
        check_limits(deployment, rpm, tpm, tokens)
        args = [self._window_ms, self._bucket_ms, -1 if rpm is None else rpm, -1 if tpm is None else tpm]
        ok, which, wait_ms = await self._acquire(
            keys=self._rl_keys(deployment), args=[*args, tokens, uuid.uuid4().hex]
        )
        if int(ok):
            return RateDecision.ok()
        return RateDecision.refused("rpm" if int(which) == 1 else "tpm", int(wait_ms) / 1000)

    async def adjust_tokens(self, deployment: str, delta: int) -> None:
        if delta:
            await self._adjust(keys=self._rl_keys(deployment)[1:], args=[self._bucket_ms, self._window_ms, int(delta)])

    async def usage(self, deployments: Sequence[str]) -> dict[str, tuple[int, int]]:
        if not deployments:
            return {}
        keys = [k for d in deployments for k in self._rl_keys(d)]
        flat = await self._usage(keys=keys, args=[self._window_ms, self._bucket_ms])
        return {d: (int(flat[2 * i]), int(flat[2 * i + 1])) for i, d in enumerate(deployments)}
