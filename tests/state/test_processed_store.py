"""One behaviour suite for every ProcessedStore backend: in-process and a real Redis.

Time: the in-process store gets a fake clock that tests advance; Redis gets short real TTLs
and brief sleeps, so the same test body proves lease and reply expiry on both.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from pipeline.state import (
    Claim,
    ClaimKind,
    InProcessStore,
    ProcessedStore,
    RedisStore,
    processed_store_from_settings,
)
from tests.fakes import FakeClock

SHORT = 0.2  # a lease or TTL that tests let lapse
PAST = 0.25  # how far to move time to pass SHORT (a real sleep on Redis)
REPLY = b'{"ok":true}\x00\xff binary-safe'



@dataclass
class Backend:
    """A store plus how to make more stores over the same state and how to let time pass."""

    name: str
    store: ProcessedStore
    _new: Callable[..., ProcessedStore]
    _advance: Callable[[float], Any]
    extra: list[ProcessedStore] = field(default_factory=list)

    def new_store(self, **kwargs: Any) -> ProcessedStore:
        """Redis: a second client (own connections) on the same namespace. Memory: fresh state."""
        store = self._new(**kwargs)
        self.extra.append(store)
        return store

    async def advance(self, seconds: float) -> None:
        await self._advance(seconds)


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()

        async def tick(seconds: float) -> None:
            clock.now += seconds

        def new_memory(**kw: Any) -> ProcessedStore:
            return InProcessStore(clock=clock, **{"reply_ttl_s": 60.0, **kw})

        b = Backend("memory", new_memory(), new_memory, tick)
    else:
        url: str = request.getfixturevalue("redis_url")
        namespace = f"test-{uuid.uuid4().hex[:12]}"

        def new_redis(**kw: Any) -> ProcessedStore:
            return RedisStore(url, namespace=namespace, **{"reply_ttl_s": 60.0, **kw})

        b = Backend("redis", new_redis(), new_redis, asyncio.sleep)
    yield b
    if isinstance(b.store, RedisStore):  # leave a shared TEST_REDIS_URL clean
        client = b.store._redis
        keys = [k async for k in client.scan_iter(match=f"{b.store.namespace}:*")]
        if keys:
            await client.delete(*keys)
    for s in [b.store, *b.extra]:
        await s.close()


@pytest.fixture
def store(backend: Backend) -> ProcessedStore:
    return backend.store


class TestProcessedStore:
    async def test_new_id_acquires(self, store: ProcessedStore) -> None:
        claim = await store.claim("r1", "a", 10)
        assert claim == Claim.of_lease()
        assert claim.acquired and not claim.busy and not claim.stored and claim.reply is None

    async def test_other_owner_is_busy_with_remaining_time(self, store: ProcessedStore) -> None:
        await store.claim("r1", "a", 10)
        claim = await store.claim("r1", "b", 10)
        assert claim.kind is ClaimKind.BUSY and claim.busy and not claim.acquired
        assert 9.0 < claim.retry_after_s <= 10.0

    async def test_same_owner_reclaims(self, store: ProcessedStore) -> None:
        await store.claim("r1", "a", 10)
        assert (await store.claim("r1", "a", 10)).acquired

    async def test_complete_then_every_claim_gets_the_reply(self, store: ProcessedStore) -> None:
        await store.claim("r1", "a", 10)
        await store.complete("r1", "a", REPLY)
        for owner in ("a", "b", "c"):
            claim = await store.claim("r1", owner, 10)
            assert claim == Claim.of_reply(REPLY) and claim.stored and claim.reply == REPLY
        assert (await store.claim("r2", "b", 10)).acquired  # other ids are unaffected

    async def test_complete_after_lease_lapsed_still_stores(self, backend: Backend) -> None:
        store = backend.store
        await store.claim("r1", "a", SHORT)
        await backend.advance(PAST)
        assert (await store.claim("r1", "b", 10)).acquired
        await store.complete("r1", "a", REPLY)  # a's late reply is still a correct reply
        assert (await store.claim("r1", "c", 10)).reply == REPLY
        assert await store.renew("r1", "b", 10)  # ...and b's lease was not a's to delete

    async def test_release_only_by_owner(self, store: ProcessedStore) -> None:
        await store.claim("r1", "a", 10)
        await store.release("r1", "b")
        assert (await store.claim("r1", "b", 10)).busy
        await store.release("r1", "a")
        assert (await store.claim("r1", "b", 10)).acquired
        await store.release("never-claimed", "a")  # harmless

    async def test_lease_expiry_lets_another_owner_acquire(self, backend: Backend) -> None:
        store = backend.store
        await store.claim("r1", "a", SHORT)
        assert (await store.claim("r1", "b", SHORT)).busy
        await backend.advance(PAST)
        assert (await store.claim("r1", "b", 10)).acquired
        assert not await store.renew("r1", "a", 10)  # a lost it
        await store.release("r1", "a")
        assert (await store.claim("r1", "a", 10)).busy

    async def test_renew(self, backend: Backend) -> None:
        store = backend.store
        assert not await store.renew("r1", "a", 10)  # nothing held
        await store.claim("r1", "a", SHORT)
        assert not await store.renew("r1", "b", 10)
        await backend.advance(0.1)
        assert await store.renew("r1", "a", 0.3)  # now lapses 0.4 after the claim
        await backend.advance(0.15)  # past the original 0.2
        busy = await store.claim("r1", "b", 10)
        assert busy.busy and 0 < busy.retry_after_s <= 0.3
        await backend.advance(0.2)  # past the renewed lease
        assert (await store.claim("r1", "b", 10)).acquired
        await store.release("r1", "b")
        assert not await store.renew("r1", "b", 10)

    async def test_concurrent_claims_have_one_winner(self, backend: Backend) -> None:
        # Redis: two clients, i.e. separate connections, as two worker processes would have.
        stores = [backend.store, backend.new_store()] if backend.name == "redis" else [backend.store]
        claims = await asyncio.gather(*(stores[i % len(stores)].claim("hot", f"w{i}", 10) for i in range(200)))
        assert sum(c.acquired for c in claims) == 1
        assert sum(c.busy for c in claims) == 199
        winner = f"w{next(i for i, c in enumerate(claims) if c.acquired)}"
        await backend.store.complete("hot", winner, REPLY)
        again = await asyncio.gather(*(stores[i % len(stores)].claim("hot", f"x{i}", 10) for i in range(200)))
        assert all(c.reply == REPLY for c in again)

    async def test_stored_reply_expires_after_ttl(self, backend: Backend) -> None:
        store = backend.new_store(reply_ttl_s=SHORT)
        await store.claim("r1", "a", 10)
        await store.complete("r1", "a", REPLY)
        assert (await store.claim("r1", "b", 10)).reply == REPLY
        await backend.advance(PAST)
        assert (await store.claim("r1", "b", 10)).acquired

    async def test_rejects_empty_id_and_bad_lease(self, store: ProcessedStore) -> None:
        with pytest.raises(ValueError):
            await store.claim("", "a", 10)
        with pytest.raises(ValueError):
            await store.claim("r1", "a", 0)


async def test_memory_store_is_lru_bounded_and_keeps_live_leases() -> None:
    clock = FakeClock()
    store = InProcessStore(max_entries=3, reply_ttl_s=60, clock=clock)
    for rid in ("r1", "r2", "r3"):
        await store.complete(rid, "a", rid.encode())
    assert (await store.claim("r1", "x", 10)).reply == b"r1"  # r1 is now most recently used
    await store.complete("r4", "a", b"r4")  # evicts r2, the least recently used
    assert (await store.claim("r2", "x", 10)).acquired
    assert [(await store.claim(r, "y", 10)).reply for r in ("r1", "r3", "r4")] == [b"r1", b"r3", b"r4"]
    for i in range(10):  # live leases are never evicted, however many
        await store.claim(f"lease{i}", "a", 10)
    await store.complete("r5", "a", b"r5")
    assert all([(await store.claim(f"lease{i}", "b", 10)).busy for i in range(10)])
    clock.now += 11  # expired leases are swept, not kept forever
    await store.claim("other", "a", 10)
    assert len(store) == 3 + 1  # three replies + the one live lease


async def test_factory_picks_backend() -> None:
    mem = processed_store_from_settings(None, reply_ttl_s=5, max_entries=7)
    assert isinstance(mem, InProcessStore) and mem._max == 7 and mem._ttl == 5
    assert isinstance(processed_store_from_settings("  "), InProcessStore)
    red = processed_store_from_settings("redis://127.0.0.1:1/0", namespace="ns", reply_ttl_s=2)
    assert isinstance(red, RedisStore) and red.namespace == "ns" and red._ttl_ms == 2000
    assert red._keys("id") == ["ns:reply:id", "ns:lease:id"]
    await red.close()  # never connected: the client connects lazily
