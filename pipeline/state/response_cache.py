"""Exact-match response cache: reply bytes stored under a key that `stages/cache.cache_key` builds.

The cache is an optimisation, never a dependency: the Redis backend turns every Redis error
(down, refusing, slow past `op_timeout_s`) into a miss on `get` and a no-op on `set`, logging
a warning at most once per `warn_interval_s`. Keys and values never appear in logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from pipeline.state.redis_client import connect

if TYPE_CHECKING:  # redis is the optional `redis` extra; only RedisResponseCache needs it
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)

MODES = ("off", "memory", "redis")


class ResponseCache(Protocol):
    """Bytes by key with a per-entry TTL. Implementations never raise for backend trouble."""

    async def get(self, key: str) -> bytes | None:
        """The stored bytes, or None on a miss, an expired entry or (Redis) any backend error."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store `value` for `ttl_s` seconds, replacing any entry under `key`."""
        ...

    async def close(self) -> None: ...


def _check(key: str, ttl_s: float | None = None) -> None:
    """Caller contract (not backend trouble): these raise on both backends alike."""
    if not key:
        raise ValueError("cache key must be non-empty")
    if ttl_s is not None and not ttl_s > 0:
        raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")


class InProcessResponseCache:
    """Single-process cache: an LRU bounded to `max_entries`, each entry with its own expiry.

    Method bodies never `await`, so under asyncio each call is atomic. Expired entries are
    dropped when read and swept from the LRU head on every call, and never outlive eviction.
    """

    def __init__(self, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # key -> (value, expires_at)

    def __len__(self) -> int:
        return len(self._entries)

    def _sweep(self, now: float) -> None:
        while self._entries and next(iter(self._entries.values()))[1] <= now:
            self._entries.popitem(last=False)

    async def get(self, key: str) -> bytes | None:
        _check(key)
        now = self._clock()
        self._sweep(now)
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[1] <= now:  # expired, but not at the LRU head
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return hit[0]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        _check(key, ttl_s)
        now = self._clock()
        self._sweep(now)
        self._entries[key] = (bytes(value), now + ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        self._entries.clear()


class RedisResponseCache:
    """Cache shared by every worker: `SET {namespace}:cache:{key} value PX ttl`, `GET` to read.

    Construction does no I/O (the client connects on first use). Each operation is bounded by
    `op_timeout_s`, so a hung Redis delays a request by at most that much. A client passed in
    is the caller's to close; one this cache made is closed by `close()`.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "llm-pipeline",
        op_timeout_s: float = 1.0,
        warn_interval_s: float = 60.0,
        client: aioredis.Redis | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not op_timeout_s > 0:
            raise ValueError(f"op_timeout_s must be > 0, got {op_timeout_s!r}")
        self.namespace = namespace
        self.op_timeout_s = op_timeout_s
        self.errors = 0  # backend errors swallowed so far (a miss or a skipped store each)
        self._warn_interval_s = warn_interval_s
        self._clock = clock
        self._last_warning: float | None = None
        self._suppressed = 0
        self._owns_client = client is None
        self._redis: aioredis.Redis = connect(url) if client is None else client

    def _key(self, key: str) -> str:
        return f"{self.namespace}:cache:{key}"

    def _failed(self, op: str, exc: Exception) -> None:
        """Count the error; warn once per interval with the error's type only (no keys, no values)."""
        self.errors += 1
        now = self._clock()
        if self._last_warning is not None and now - self._last_warning < self._warn_interval_s:
            self._suppressed += 1
            return
        suppressed, self._suppressed, self._last_warning = self._suppressed, 0, now
        log.warning(
            "response cache %s failed (%s); serving without the cache%s",
            op,
            type(exc).__name__,
            f" ({suppressed} more errors since the last warning)" if suppressed else "",
        )

    async def get(self, key: str) -> bytes | None:
        _check(key)
        try:
            async with asyncio.timeout(self.op_timeout_s):
                value = await self._redis.get(self._key(key))
        except Exception as exc:
            self._failed("get", exc)
            return None
        # Typed `bytes | str`, but the client is in bytes mode: `connect()` never sets decode_responses.
        return None if value is None else bytes(cast(bytes, value))

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        _check(key, ttl_s)
        try:
            async with asyncio.timeout(self.op_timeout_s):
                await self._redis.set(self._key(key), bytes(value), px=max(1, round(ttl_s * 1000)))
        except Exception as exc:
            self._failed("set", exc)

    async def close(self) -> None:
        if self._owns_client:
            await self._redis.aclose()

