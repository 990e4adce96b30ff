"""One behaviour suite for every ResponseCache backend: in-process and a real Redis.

Time: the in-process cache gets a fake clock that tests advance; Redis gets short real TTLs
and brief sleeps. Failure: a Redis that refuses connections, and one that accepts and never
answers, must both look like a cache miss, never like an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest

from pipeline.local import free_ports
from pipeline.state import SharedState
from pipeline.state.response_cache import InProcessResponseCache, RedisResponseCache, ResponseCache
from tests.fakes import FakeClock
from tests.state.conftest import StateBackend

SHORT = 0.2  # a TTL that tests let lapse
PAST = 0.3  # how far to move time to pass SHORT (a real sleep on Redis)
VALUE = b'{"content":"hi"}\x00\xff binary-safe'
KEY = "0" * 64


def cache_of(state: SharedState) -> ResponseCache:
    assert state.response_cache is not None  # the fixture enables it: memory in-process, redis on Redis
    return state.response_cache


@pytest.fixture
def cache(backend: StateBackend) -> ResponseCache:
    return cache_of(backend.state)


class TestResponseCache:
    async def test_miss_then_set_then_hit(self, cache: ResponseCache) -> None:
        assert await cache.get(KEY) is None
        await cache.set(KEY, VALUE, 60)
        got = await cache.get(KEY)
        assert got == VALUE and isinstance(got, bytes)
        assert await cache.get("1" * 64) is None  # other keys unaffected

    async def test_set_replaces_value(self, cache: ResponseCache) -> None:
        await cache.set(KEY, b"old", 60)
        await cache.set(KEY, b"new", 60)
        assert await cache.get(KEY) == b"new"

    async def test_entry_expires_after_its_ttl(self, backend: StateBackend, cache: ResponseCache) -> None:
        await cache.set("short", VALUE, SHORT)
        await cache.set("long", b"long", 60)
        assert await cache.get("short") == VALUE
        await backend.advance(PAST)
        assert await cache.get("short") is None
        assert await cache.get("long") == b"long"  # TTL is per entry

    async def test_set_again_restarts_the_ttl(self, backend: StateBackend, cache: ResponseCache) -> None:
        await cache.set(KEY, VALUE, SHORT)
        await backend.advance(0.1)
        await cache.set(KEY, VALUE, 0.4)  # now lapses 0.5 after the first set
        await backend.advance(0.2)  # past the original SHORT
        assert await cache.get(KEY) == VALUE
        await backend.advance(0.35)
        assert await cache.get(KEY) is None

    async def test_namespaces_are_isolated(self, backend: StateBackend, cache: ResponseCache) -> None:
        await cache.set(KEY, b"mine", 60)
        if backend.name == "redis":
            same = cache_of(backend.other())  # another worker on the same namespace shares the entries
            assert await same.get(KEY) == b"mine"
        other = cache_of(backend.fresh(redis_namespace=f"other-{uuid.uuid4().hex[:8]}"))
        assert await other.get(KEY) is None
        await other.set(KEY, b"theirs", 60)
        assert await cache.get(KEY) == b"mine"
        assert await other.get(KEY) == b"theirs"

    async def test_rejects_empty_key_and_bad_ttl(self, cache: ResponseCache) -> None:
        with pytest.raises(ValueError):
            await cache.get("")
        with pytest.raises(ValueError):
            await cache.set("", VALUE, 60)
        for ttl in (0, -1):
            with pytest.raises(ValueError):
                await cache.set(KEY, VALUE, ttl)


async def test_redis_key_layout_and_px_ttl(redis_url: str) -> None:
    ns = f"test-{uuid.uuid4().hex[:12]}"
    cache = RedisResponseCache(redis_url, namespace=ns)
    try:
        await cache.set("abc", VALUE, 30)
        raw = cache._redis
        assert await raw.get(f"{ns}:cache:abc") == VALUE
        assert 29_000 < await raw.pttl(f"{ns}:cache:abc") <= 30_000
        assert [k async for k in raw.scan_iter(match=f"{ns}:*")] == [f"{ns}:cache:abc".encode()]
        await raw.delete(f"{ns}:cache:abc")
    finally:
        await cache.close()


async def test_memory_cache_is_lru_bounded() -> None:
    clock = FakeClock()
    cache = InProcessResponseCache(max_entries=3, clock=clock)
    for k in ("k1", "k2", "k3"):
        await cache.set(k, k.encode(), 60)
    assert await cache.get("k1") == b"k1"  # k1 is now most recently used
    await cache.set("k4", b"k4", 60)  # evicts k2, the least recently used
    assert await cache.get("k2") is None
    assert len(cache) == 3
    await cache.set("k3", b"k3'", 60)  # re-setting counts as use: k1 is now the oldest
    await cache.set("k5", b"k5", 60)
    assert [await cache.get(k) for k in ("k1", "k3", "k4", "k5")] == [None, b"k3'", b"k4", b"k5"]


async def test_memory_cache_drops_expired_entries() -> None:
    clock = FakeClock()
    cache = InProcessResponseCache(max_entries=100, clock=clock)
    for i in range(10):
        await cache.set(f"k{i}", b"v", 1)
    await cache.set("keep", b"v", 60)
    clock.now += 2
    await cache.get("anything")
    assert len(cache) == 1  # expired entries do not linger until evicted
    with pytest.raises(ValueError):
        InProcessResponseCache(max_entries=0)


def _closed_port_url() -> str:
    (port,) = free_ports(1)  # nobody listens there: connections are refused
    return f"redis://127.0.0.1:{port}/0"


async def test_redis_down_is_a_miss_and_warns_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    cache = RedisResponseCache(_closed_port_url(), namespace="ns", clock=clock)  # constructing does no I/O
    caplog.set_level(logging.WARNING, logger="pipeline.state.response_cache")
    try:
        secret_key, secret_value = "k" + "s3cr3t" * 5, b"top-secret-answer"
        assert await cache.get(secret_key) is None
        await cache.set(secret_key, secret_value, 60)  # no exception
        for _ in range(5):
            assert await cache.get(secret_key) is None
        assert cache.errors == 7
        warnings = [r for r in caplog.records if r.name == "pipeline.state.response_cache"]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        assert "ConnectionError" in warnings[0].getMessage()

        clock.now += 61  # the next error warns again and says how many were kept quiet
        await cache.set(secret_key, secret_value, 60)
        warnings = [r for r in caplog.records if r.name == "pipeline.state.response_cache"]
        assert len(warnings) == 2 and "6 more errors" in warnings[1].getMessage()
        assert all("s3cr3t" not in r.getMessage() and "top-secret" not in r.getMessage() for r in warnings)
    finally:
        await cache.close()


async def test_hung_redis_is_a_miss_after_the_op_timeout() -> None:
    """A Redis that accepts connections and never answers must not hold a request up."""
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(1024):
                pass
        finally:
            writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cache = RedisResponseCache(f"redis://127.0.0.1:{port}/0", op_timeout_s=0.2)
    try:
        started = time.monotonic()
        assert await cache.get(KEY) is None
        await cache.set(KEY, VALUE, 60)
        assert time.monotonic() - started < 2.0
        assert cache.errors == 2
    finally:
        await cache.close()
        server.close()
        await server.wait_closed()
