"""One behaviour suite for every ProcessedStore backend: in-process and a real Redis.

Time: the in-process store gets a fake clock that tests advance; Redis gets short real TTLs
and brief sleeps, so the same test body proves lease and reply expiry on both.
"""

from __future__ import annotations

import asyncio

import pytest

from pipeline.state import Claim, ClaimKind, InProcessStore, ProcessedStore, RequestKey
from tests.fakes import FakeClock
from tests.state.conftest import StateBackend

SHORT = 0.2  # a lease or TTL that tests let lapse
PAST = 0.25  # how far to move time to pass SHORT (a real sleep on Redis)
REPLY = b'{"ok":true}\x00\xff binary-safe'


@pytest.fixture
def store(backend: StateBackend) -> ProcessedStore:
    return backend.state.processed


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

    async def test_complete_after_lease_lapsed_still_stores(self, backend: StateBackend) -> None:
        store = backend.state.processed
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

    async def test_lease_expiry_lets_another_owner_acquire(self, backend: StateBackend) -> None:
        store = backend.state.processed
        await store.claim("r1", "a", SHORT)
        assert (await store.claim("r1", "b", SHORT)).busy
        await backend.advance(PAST)
        assert (await store.claim("r1", "b", 10)).acquired
        assert not await store.renew("r1", "a", 10)  # a lost it
        await store.release("r1", "a")
        assert (await store.claim("r1", "a", 10)).busy

    async def test_renew(self, backend: StateBackend) -> None:
        store = backend.state.processed
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

    async def test_concurrent_claims_have_one_winner(self, backend: StateBackend) -> None:
        # Redis: two clients, i.e. separate connections, as two worker processes would have.
        stores = [backend.state.processed, backend.other().processed]  # memory: the same store twice
        claims = await asyncio.gather(*(stores[i % len(stores)].claim("hot", f"w{i}", 10) for i in range(200)))
        assert sum(c.acquired for c in claims) == 1
        assert sum(c.busy for c in claims) == 199
        winner = f"w{next(i for i, c in enumerate(claims) if c.acquired)}"
        await backend.state.processed.complete("hot", winner, REPLY)
        again = await asyncio.gather(*(stores[i % len(stores)].claim("hot", f"x{i}", 10) for i in range(200)))
        assert all(c.reply == REPLY for c in again)

    async def test_stored_reply_expires_after_ttl(self, backend: StateBackend) -> None:
        store = backend.fresh(idempotency_ttl_s=SHORT).processed
        await store.claim("r1", "a", 10)
        await store.complete("r1", "a", REPLY)
        assert (await store.claim("r1", "b", 10)).reply == REPLY
        await backend.advance(PAST)
        assert (await store.claim("r1", "b", 10)).acquired

    async def test_two_tenants_with_the_same_request_id_are_two_requests(self, backend: StateBackend) -> None:
        store, other = backend.state.processed, backend.other().processed  # two workers on one state
        alpha, beta = RequestKey("alpha", "order-1"), RequestKey("beta", "order-1")
        assert (await store.claim(alpha, "a", 10)).acquired
        assert (await other.claim(beta, "b", 10)).acquired  # alpha's lease does not hold beta up
        await store.complete(alpha, "a", b"alpha's answer")
        assert (await other.claim(beta, "c", 10)).busy  # beta's own lease, not alpha's reply
        await other.complete(beta, "b", b"beta's answer")
        assert (await other.claim(alpha, "x", 10)).reply == b"alpha's answer"
        assert (await store.claim(beta, "x", 10)).reply == b"beta's answer"
        # The encoding cannot be confused: tenant "a:b" + id "c" vs tenant "a" + id "b:c".
        await store.claim(RequestKey("a:b", "c"), "a", 10)
        await store.complete(RequestKey("a:b", "c"), "a", REPLY)
        assert (await other.claim(RequestKey("a", "b:c"), "b", 10)).acquired
        assert (await other.claim(RequestKey.of("order-1"), "d", 10)).acquired  # no tenant: the default one
        assert await other.renew(RequestKey("a", "b:c"), "b", 10)
        await other.release(RequestKey("a", "b:c"), "b")
        assert (await store.claim(RequestKey("a", "b:c"), "e", 10)).acquired

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
