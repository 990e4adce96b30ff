"""The shared-state factory: which backends a setting gives, one Redis pool for all of them,
closed once, and never any I/O while building."""

from __future__ import annotations

import uuid

import pytest

from pipeline.settings import Settings
from pipeline.state import InProcessStore, RedisStore, shared_state_from_settings
from pipeline.state.budget import BudgetLine, InProcessLedger, RedisLedger, Reserved
from pipeline.state.health import InProcessHealth, RedisHealth
from pipeline.state.response_cache import InProcessResponseCache, RedisResponseCache

UNREACHABLE = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def _settings(**kw: object) -> Settings:
    return Settings(**{"redis_namespace": f"test-{uuid.uuid4().hex[:12]}", **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("url", [None, "", "  "])
async def test_no_redis_url_gives_in_process_backends(url: str | None) -> None:
    state = shared_state_from_settings(
        _settings(redis_url=url, idempotency_ttl_s=5, idempotency_max_entries=7, response_cache="memory",
                  response_cache_max_entries=9)
    )
    assert state.client is None and not state.shared
    assert isinstance(state.processed, InProcessStore) and state.processed._max == 7 and state.processed._ttl == 5
    assert isinstance(state.budgets, InProcessLedger)
    assert isinstance(state.health, InProcessHealth)
    assert isinstance(state.response_cache, InProcessResponseCache) and state.response_cache.max_entries == 9
    await state.aclose()


async def test_building_connects_nothing_and_reads_the_settings() -> None:
    """An unreachable Redis: building (and closing, never having connected) neither blocks nor fails."""
    state = shared_state_from_settings(
        _settings(redis_url=f" {UNREACHABLE} ", redis_namespace="ns", idempotency_ttl_s=2, response_cache="redis")
    )
    assert state.shared
    red = state.processed
    assert isinstance(red, RedisStore) and red.namespace == "ns" and red._ttl_ms == 2000
    assert red._keys("id") == ["ns:reply:id", "ns:lease:id"]
    assert isinstance(state.budgets, RedisLedger) and state.budgets._key("k") == "ns:budget:k"
    assert isinstance(state.health, RedisHealth) and state.health._key("fails", "d") == "ns:health:fails:d"
    cache = state.response_cache
    assert isinstance(cache, RedisResponseCache) and cache.namespace == "ns" and cache._key("k") == "ns:cache:k"
    await state.aclose()


async def test_response_cache_modes() -> None:
    off = shared_state_from_settings(_settings(redis_url=UNREACHABLE, response_cache="off"))
    assert off.response_cache is None and isinstance(off.processed, RedisStore)
    await off.aclose()
    memory = shared_state_from_settings(_settings(redis_url=UNREACHABLE, response_cache="memory"))
    assert isinstance(memory.response_cache, InProcessResponseCache)  # this worker's, beside Redis state
    assert isinstance(memory.budgets, RedisLedger)
    await memory.aclose()
    for url in (None, "", "  "):
        with pytest.raises(ValueError, match="redis_url"):
            shared_state_from_settings(_settings(redis_url=url, response_cache="redis"))
    for mode in ("on", "disk", ""):  # the Literal setting refuses these; the factory too, if bypassed
        with pytest.raises(ValueError, match="response_cache"):
            shared_state_from_settings(_settings(redis_url=UNREACHABLE).model_copy(update={"response_cache": mode}))


async def test_redis_backends_share_one_client_and_aclose_closes_it_once(redis_url: str) -> None:
    state = shared_state_from_settings(_settings(redis_url=redis_url, response_cache="redis"))
    client = state.client
    backends = [state.processed, state.budgets, state.health, state.response_cache]
    assert all(b._redis is client for b in backends)  # type: ignore[union-attr]
    assert len({id(b._redis.connection_pool) for b in backends}) == 1  # type: ignore[union-attr]
    pool = client.connection_pool

    # Every backend works over it...
    assert (await state.processed.claim("r1", "a", 10)).acquired
    assert await state.budgets.reserve([BudgetLine("k", "k", 100, 100)], 1) == Reserved()
    assert await state.health.cooling_down(["d"]) == {}
    await state.response_cache.set("k", b"v", 60)  # type: ignore[union-attr]
    assert await state.response_cache.get("k") == b"v"  # type: ignore[union-attr]
    assert any(c.is_connected for c in pool._available_connections)  # all of it through this one pool

    # ...and none closes it: a backend's close() leaves the shared client open.
    for b in backends:
        await b.close()  # type: ignore[union-attr]
    assert await client.ping()

    closes = 0
    real_aclose = client.aclose

    async def counting_aclose(*args: object, **kwargs: object) -> None:
        nonlocal closes
        closes += 1
        await real_aclose(*args, **kwargs)

    client.aclose = counting_aclose
    keys = [k async for k in client.scan_iter(match=f"{state.processed.namespace}:*")]  # type: ignore[attr-defined]
    await client.delete(*keys)
    await state.aclose()
    assert closes == 1
    assert not any(c.is_connected for c in [*pool._available_connections, *pool._in_use_connections])


async def test_two_factory_calls_are_two_pools(redis_url: str) -> None:
    """As two workers: separate pools over the same namespace see the same state."""
    settings = _settings(redis_url=redis_url)
    a, b = shared_state_from_settings(settings), shared_state_from_settings(settings)
    try:
        assert a.client is not b.client and a.client.connection_pool is not b.client.connection_pool
        await a.budgets.restore("k", 42)
        assert await b.budgets.values(["k"]) == [42]
        await a.client.delete(f"{settings.redis_namespace}:budget:k")
    finally:
        await a.aclose()
        await b.aclose()
