"""Processed-request store: makes at-least-once Kafka delivery answer each request_id once.

A worker `claim`s a request id before calling a provider. A stored reply means the request was
already answered (re-publish those bytes); a lease means this worker may process it; a lease
held by someone else means wait. `complete` stores the reply and drops the lease; `release`
drops the lease after a failure so a redelivery can try again.

Every key is a `RequestKey`: (tenant, request_id), so the same request id from two tenants is
two requests, each with its own lease and its own stored reply. A request without a tenant is in
the `DEFAULT_TENANT` namespace (`contracts.models.DEFAULT_TENANT`, the contract's default).
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, unquote

from pipeline.contracts.models import DEFAULT_TENANT
from pipeline.state.redis_client import connect

if TYPE_CHECKING:  # redis is the optional `redis` extra; only RedisStore needs it
    import redis.asyncio as aioredis



@dataclass(frozen=True, slots=True)
class RequestKey:
    """What idempotency is keyed by: one request is one (tenant, request_id).

    `encoded` is `<tenant percent-encoded>:<request_id>`: the tenant never holds a raw `:`, so
    the first `:` always ends it and no two keys share an encoding (tenant "a:b" + id "c" is
    `a%3Ab:c`, tenant "a" + id "b:c" is `a:b:c`).
    """

    tenant: str
    request_id: str

    def __post_init__(self) -> None:
        if not self.tenant:
            raise ValueError("tenant must be non-empty (a request without one is in DEFAULT_TENANT)")
        if not self.request_id:
            raise ValueError("request_id must be non-empty")

    @classmethod
    def of(cls, request_id: str, tenant: str | None = None) -> RequestKey:
        """The key of `request_id` from `tenant` (None or empty: the default namespace)."""
        return cls(tenant or DEFAULT_TENANT, request_id)

    @property
    def encoded(self) -> str:
        return f"{quote(self.tenant, safe='')}:{self.request_id}"

    @classmethod
    def decode(cls, encoded: str) -> RequestKey:
        tenant, sep, request_id = encoded.partition(":")
        if not sep:
            raise ValueError(f"not an encoded request key: {encoded!r}")
        return cls(unquote(tenant), request_id)

    def __str__(self) -> str:
        return self.encoded


#: A key as the stores take it: a `RequestKey`, or a string taken as an already-encoded key.
Key = RequestKey | str


def _encoded(key: Key) -> str:
    return key.encoded if isinstance(key, RequestKey) else key


class ClaimKind(Enum):
    STORED = "stored"
    ACQUIRED = "acquired"
    BUSY = "busy"


@dataclass(frozen=True, slots=True)
class Claim:
    """Outcome of `ProcessedStore.claim`: a stored reply, the lease, or 'busy for N seconds'."""

    kind: ClaimKind
    reply: bytes | None = None  # set only for STORED
    retry_after_s: float = 0.0  # remaining lease time of the other holder, only for BUSY

    @classmethod
    def of_reply(cls, reply: bytes) -> Claim:
        return cls(ClaimKind.STORED, reply=bytes(reply))

    @classmethod
    def of_lease(cls) -> Claim:
        return cls(ClaimKind.ACQUIRED)

    @classmethod
    def of_busy(cls, retry_after_s: float) -> Claim:
        return cls(ClaimKind.BUSY, retry_after_s=max(0.0, float(retry_after_s)))

    @property
    def stored(self) -> bool:
        return self.kind is ClaimKind.STORED

    @property
    def acquired(self) -> bool:
        return self.kind is ClaimKind.ACQUIRED

    @property
    def busy(self) -> bool:
        return self.kind is ClaimKind.BUSY


class ProcessedStore(Protocol):
    """What the worker needs; backends differ only in how far the state is shared."""

    async def claim(self, key: Key, owner: str, lease_s: float) -> Claim:
        """Atomically: the stored reply, else the lease (re-entrant for its owner), else busy."""
        ...

    async def complete(self, key: Key, owner: str, reply: bytes) -> None:
        """Store the reply (even if our lease lapsed: the reply is still right), drop our lease."""
        ...

    async def release(self, key: Key, owner: str) -> None:
        """Drop the lease only if `owner` still holds it (processing failed; redelivery retries)."""
        ...

    async def renew(self, key: Key, owner: str, lease_s: float) -> bool:
        """Reset a held lease to `lease_s` from now; False if `owner` no longer holds it."""
        ...

    async def close(self) -> None: ...


def _check(key: Key, lease_s: float | None = None) -> str:
    """The encoded key, after the caller contract's checks."""
    request_id = _encoded(key)
    if not request_id:
        raise ValueError("request_id must be non-empty")
    if lease_s is not None and not lease_s > 0:
        raise ValueError(f"lease_s must be > 0, got {lease_s!r}")
    return request_id


@dataclass(slots=True)
class _Lease:
    owner: str
    expires_at: float


class InProcessStore:
    """Single-process store: LRU of replies with a TTL, plus leases that expire by the clock.

    Every method body runs without an `await`, so under asyncio each call is atomic.
    `max_entries` bounds the stored replies (least recently used evicted first); leases are
    never evicted while live: they are bounded by in-flight work and swept once expired.
    """

    def __init__(
        self,
        *,
        reply_ttl_s: float = 86400,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or reply_ttl_s <= 0:
            raise ValueError("max_entries must be >= 1 and reply_ttl_s > 0")
        self._ttl = reply_ttl_s
        self._max = max_entries
        self._clock = clock
        self._replies: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # id -> (reply, expires_at)
        self._leases: dict[str, _Lease] = {}
        self._lease_expiry: list[tuple[float, str]] = []  # heap; stale entries are skipped

    def __len__(self) -> int:
        return len(self._replies) + len(self._leases)

    def _sweep(self, now: float) -> None:
        """Drop expired leases (via the heap) and expired replies at the LRU head: amortised O(log n)."""
        while self._lease_expiry and self._lease_expiry[0][0] <= now:
            _, rid = heapq.heappop(self._lease_expiry)
            lease = self._leases.get(rid)
            if lease is not None and lease.expires_at <= now:
                del self._leases[rid]
        while self._replies and next(iter(self._replies.values()))[1] <= now:
            self._replies.popitem(last=False)

    def _live_lease(self, request_id: str, now: float) -> _Lease | None:
        lease = self._leases.get(request_id)
        return lease if lease is not None and lease.expires_at > now else None

    def _set_lease(self, request_id: str, owner: str, expires_at: float) -> None:
        self._leases[request_id] = _Lease(owner, expires_at)
        heapq.heappush(self._lease_expiry, (expires_at, request_id))

    async def claim(self, key: Key, owner: str, lease_s: float) -> Claim:
        request_id = _check(key, lease_s)
        now = self._clock()
        self._sweep(now)
        hit = self._replies.get(request_id)
        if hit is not None and hit[1] > now:
            self._replies.move_to_end(request_id)
            return Claim.of_reply(hit[0])
        if hit is not None:  # expired but not yet at the LRU head
            del self._replies[request_id]
        lease = self._live_lease(request_id, now)
        if lease is not None and lease.owner != owner:
            return Claim.of_busy(lease.expires_at - now)
        self._set_lease(request_id, owner, now + lease_s)
        return Claim.of_lease()

    async def complete(self, key: Key, owner: str, reply: bytes) -> None:
        request_id = _check(key)
        now = self._clock()
        self._sweep(now)
        self._replies[request_id] = (bytes(reply), now + self._ttl)
        self._replies.move_to_end(request_id)
        while len(self._replies) > self._max:
            self._replies.popitem(last=False)
        await self.release(request_id, owner)  # completes synchronously: still one atomic step

    async def release(self, key: Key, owner: str) -> None:
        request_id = _encoded(key)
        lease = self._leases.get(request_id)
        if lease is not None and lease.owner == owner:
            del self._leases[request_id]

    async def renew(self, key: Key, owner: str, lease_s: float) -> bool:
        request_id = _check(key, lease_s)
        now = self._clock()
        lease = self._live_lease(request_id, now)
        if lease is None or lease.owner != owner:
            return False
        self._set_lease(request_id, owner, now + lease_s)
        return True

    async def close(self) -> None:
        self._replies.clear()
        self._leases.clear()
        self._lease_expiry.clear()


# KEYS[1] = reply key, KEYS[2] = lease key. Replies: {0, reply} stored, {1, ''} acquired, {2, pttl} busy.
_CLAIM = """
local reply = redis.call('GET', KEYS[1])
if reply then return {0, reply} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, ''} end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('PEXPIRE', KEYS[2], ARGV[2]); return {1, ''} end
return {2, redis.call('PTTL', KEYS[2])}
"""
_COMPLETE = """
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisStore:
    """Store shared by every worker process; each operation is one Lua script, so atomic in Redis.

    Keys: `{namespace}:reply:{key}` (reply bytes, PX TTL) and `{namespace}:lease:{key}` (owner, PX
    TTL), `{key}` being `RequestKey.encoded` (tenant, then request id).
    Both keys of an id are touched by one script, so a Redis Cluster deployment would need a
    hash tag in the namespace or id; a single Redis (or a replicated primary) needs nothing.

    A client passed in is the caller's to close (the shared-state factory shares one pool);
    one this store made from `url` is closed by `close()`.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "llm-pipeline",
        reply_ttl_s: float = 86400,
        client: aioredis.Redis | None = None,
    ) -> None:
        if reply_ttl_s <= 0:
            raise ValueError("reply_ttl_s must be > 0")
        self.namespace = namespace
        self._ttl_ms = _ms(reply_ttl_s)
        self._owns_client = client is None
        if client is None:
            client = connect(url)
        self._redis: aioredis.Redis = client
        self._claim = self._redis.register_script(_CLAIM)
        self._complete = self._redis.register_script(_COMPLETE)
        self._release = self._redis.register_script(_RELEASE)
        self._renew = self._redis.register_script(_RENEW)

    def _keys(self, key: Key) -> list[str]:
        encoded = _encoded(key)
        return [f"{self.namespace}:reply:{encoded}", f"{self.namespace}:lease:{encoded}"]

    async def claim(self, key: Key, owner: str, lease_s: float) -> Claim:
        _check(key, lease_s)
        code, value = await self._claim(keys=self._keys(key), args=[owner, _ms(lease_s)])
        if code == 0:
            return Claim.of_reply(value)
        if code == 1:
            return Claim.of_lease()
        return Claim.of_busy(max(int(value), 0) / 1000)

    async def complete(self, key: Key, owner: str, reply: bytes) -> None:
        _check(key)
        await self._complete(keys=self._keys(key), args=[owner, bytes(reply), self._ttl_ms])

    async def release(self, key: Key, owner: str) -> None:
        _check(key)
        await self._release(keys=self._keys(key)[1:], args=[owner])

    async def renew(self, key: Key, owner: str, lease_s: float) -> bool:
        _check(key, lease_s)
        result: Any = await self._renew(keys=self._keys(key)[1:], args=[owner, _ms(lease_s)])
        return bool(result)

    async def close(self) -> None:
        if self._owns_client:
            await self._redis.aclose()
