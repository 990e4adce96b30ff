"""Deployment health (cooldowns, RPM/TPM, stats), one test body for both backends.

Memory runs on a fake clock; Redis on its own TIME with short real windows (Redis has no clock
to inject), so `advance` moves the fake clock or sleeps.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from pipeline.state.health import HealthState, InProcessHealth, RateDecision, RedisHealth
from tests.state.conftest import StateBackend

D = "gpt-4o-mini@openai-eu"
FAIL = {"allowed_fails": 3, "window_s": 0.3, "cooldown_s": 0.3}


class Harness:
    """Two handles on one health state (two Redis clients, as two workers would hold)."""

    def __init__(self, backend: StateBackend) -> None:
        self._backend = backend
        self.a = backend.state.health
        self.b = backend.other().health

    def make(self, window_s: float) -> HealthState:
        """Health with another rate window (not a setting): built over the factory's client and clock."""
        b = self._backend
        if b.state.client is None:
            return InProcessHealth(window_s=window_s, clock=b.clock)
        assert b.settings.redis_url is not None
        return RedisHealth(b.settings.redis_url, namespace=b.settings.redis_namespace, window_s=window_s,
                           client=b.state.client)

    async def advance(self, seconds: float) -> None:
        await self._backend.advance(seconds)


@pytest.fixture
def health(backend: StateBackend) -> Harness:
    return Harness(backend)


async def test_cooldown_after_allowed_fails_within_window(health: Harness) -> None:
    h = health.a
    assert await h.record_failure(D, **FAIL) is False
    assert await h.record_failure(D, **FAIL) is False
    assert await h.cooling_down([D]) == {}
    assert await h.record_failure(D, **FAIL) is True  # the third: cooldown starts, reported once
    assert await h.record_failure(D, **FAIL) is False  # in-flight failure during the cooldown
    remaining = (await h.cooling_down([D]))[D]
    assert 0 < remaining <= 0.3


async def test_success_does_not_reset_failures(health: Harness) -> None:
    h = health.a
    for _ in range(2):
        assert await h.record_failure(D, **FAIL) is False
        await h.record_success(D)
    assert await h.record_failure(D, **FAIL) is True


async def test_failures_outside_the_window_do_not_count(health: Harness) -> None:
    h = health.a
    opts = {**FAIL, "allowed_fails": 2}
    assert await h.record_failure(D, **opts) is False
    await health.advance(0.35)  # the first failure has aged out
    assert await h.record_failure(D, **opts) is False
    assert await h.cooling_down([D]) == {}
    assert await h.record_failure(D, **opts) is True


async def test_cooldown_expires_and_starts_afresh(health: Harness) -> None:
    h = health.a
    opts = {**FAIL, "allowed_fails": 1}
    assert await h.record_failure(D, **opts) is True
    await health.advance(0.35)
    assert await h.cooling_down([D]) == {}
    assert await h.record_failure(D, **opts) is True  # count was cleared on entering the cooldown


async def test_cooling_down_for_many_and_clear(health: Harness) -> None:
    h = health.a
    names = [f"m{i}@p" for i in range(6)]
    for name in names[::2]:
        await h.record_failure(name, allowed_fails=1, window_s=60, cooldown_s=30)
    cooling = await h.cooling_down(names)
    assert sorted(cooling) == names[::2]
    assert all(25 < s <= 30 for s in cooling.values())
    await h.clear(names[0])
    assert sorted(await h.cooling_down(names)) == names[2::2]


async def test_cooldown_is_shared_and_started_once(health: Harness) -> None:
    a, b = health.a, health.b
    opts = {"allowed_fails": 3, "window_s": 60, "cooldown_s": 30}
    started = await asyncio.gather(*((a if i % 2 else b).record_failure(D, **opts) for i in range(20)))
    assert started.count(True) == 1
    assert D in await b.cooling_down([D]) and D in await a.cooling_down([D])


async def test_concurrent_acquires_never_exceed_rpm(health: Harness) -> None:
    a, b = health.a, health.b
    decisions = await asyncio.gather(
        *((a if i % 2 else b).try_acquire(D, rpm=50, tpm=None, tokens=10) for i in range(300))
    )
    assert sum(d.allowed for d in decisions) == 50
    refused = [d for d in decisions if not d.allowed]
    assert all(d.limit == "rpm" and 0 < d.retry_after_s <= 60 for d in refused)
    assert await a.usage([D, "idle@p"]) == {D: (50, 500), "idle@p": (0, 0)}


async def test_tpm_refuses_when_tokens_would_exceed(health: Harness) -> None:
    h = health.a
    assert await h.try_acquire(D, rpm=None, tpm=1000, tokens=600) == RateDecision.ok()
    refused = await h.try_acquire(D, rpm=None, tpm=1000, tokens=500)
    assert not refused.allowed and refused.limit == "tpm" and 0 < refused.retry_after_s <= 61
    assert (await h.try_acquire(D, rpm=None, tpm=1000, tokens=400)).allowed
    assert await h.usage([D]) == {D: (2, 1000)}  # the refused call counted nothing
    assert (await h.try_acquire("big@p", rpm=None, tpm=1000, tokens=5000)).allowed  # empty window


async def test_adjust_tokens(health: Harness) -> None:
    h = health.a
    assert (await h.try_acquire(D, rpm=10, tpm=1000, tokens=900)).allowed
    assert not (await h.try_acquire(D, rpm=10, tpm=1000, tokens=300)).allowed
    await h.adjust_tokens(D, -700)  # the call used 200, not 900
    assert await h.usage([D]) == {D: (1, 200)}
    assert (await h.try_acquire(D, rpm=10, tpm=1000, tokens=300)).allowed
    await h.adjust_tokens(D, 600)  # ... and this one 900
    assert await h.usage([D]) == {D: (2, 1100)}
    assert (await h.try_acquire(D, rpm=10, tpm=1000, tokens=1)).limit == "tpm"


async def test_window_rolls(health: Harness) -> None:
    h = health.make(window_s=1.0)
    assert (await h.try_acquire(D, rpm=2, tpm=None, tokens=5)).allowed
    await health.advance(0.3)
    assert (await h.try_acquire(D, rpm=2, tpm=None, tokens=5)).allowed
    refused = await h.try_acquire(D, rpm=2, tpm=None, tokens=5)
    assert refused.limit == "rpm" and 0.2 < refused.retry_after_s <= 0.75  # when the first ages out
    await health.advance(refused.retry_after_s + 0.05)
    assert await h.usage([D]) == {D: (1, 5)}  # exact for requests; Redis token buckets are 1/60 window
    assert (await h.try_acquire(D, rpm=2, tpm=None, tokens=5)).allowed
    assert not (await h.try_acquire(D, rpm=2, tpm=None, tokens=5)).allowed


async def test_stats_error_rate_and_p50(health: Harness) -> None:
    a, b = health.a, health.b
    for i, ms in enumerate([100.0, 300.0, 200.0, 50.0, 400.0]):
        await (a if i % 2 else b).record_outcome(D, ok=ms != 50.0, latency_ms=ms)
    stats = await a.stats([D, "idle@p"])
    assert stats[D].calls == 5 and stats[D].errors == 1
    assert stats[D].error_rate == pytest.approx(0.2)
    assert stats[D].p50_latency_ms == pytest.approx(250.0)  # successful calls only
    assert stats["idle@p"].calls == 0 and stats["idle@p"].p50_latency_ms is None


async def test_stats_keep_the_last_outcomes_only(health: Harness) -> None:
    h = health.a
    for _ in range(210):
        await h.record_outcome(D, ok=False, latency_ms=1.0)
    for _ in range(200):
        await h.record_outcome(D, ok=True, latency_ms=7.5)
    s = (await h.stats([D]))[D]
    assert (s.calls, s.errors, s.p50_latency_ms) == (200, 0, 7.5)


async def test_a_cooldown_started_elsewhere_is_seen_within_the_view_period(redis_url: str) -> None:
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    a = RedisHealth(redis_url, namespace=namespace, cooldown_view_s=0.2)
    b = RedisHealth(redis_url, namespace=namespace, cooldown_view_s=0.2)
    try:
        assert await b.cooling_down([D]) == {}  # b now holds a view of D
        assert await a.record_failure(D, allowed_fails=1, window_s=60, cooldown_s=30) is True
        assert D in await a.cooling_down([D])  # the worker that started it sees it at once
        await asyncio.sleep(0.25)
        assert 25 < (await b.cooling_down([D]))[D] <= 30  # the other within the view period
        await b.clear(D)
        assert await b.cooling_down([D]) == {}
    finally:
        await a.close()
        await b.close()
