"""One backend fixture for every state suite: each test body runs in-process and on a real Redis.

Both are built by `shared_state_from_settings`, so the suites exercise the factory (and, on
Redis, backends over one shared client) rather than hand-made backends. Time: the in-process
state gets a fake clock that `advance` moves; Redis keeps its own time, so `advance` sleeps.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pipeline.settings import Settings
from pipeline.state import SharedState, shared_state_from_settings
from tests.fakes import FakeClock


@dataclass
class StateBackend:
    """The state under test (`state`), and how to get more handles on it."""

    name: str  # "memory" or "redis", the fixture's parameter
    settings: Settings
    clock: FakeClock
    state: SharedState
    _opened: list[tuple[SharedState, str]] = field(default_factory=list)  # (handle, its namespace)

    def other(self) -> SharedState:
        """Another worker's handle on the same state. Redis: a second factory call (its own pool)
        on the same namespace. Memory: one process holds one state, so the same one."""
        return self.state if self.name == "memory" else self.fresh()

    def fresh(self, **settings: Any) -> SharedState:
        """A new factory call with `settings` changed (e.g. `idempotency_ttl_s`, `redis_namespace`).
        Redis: same namespace unless changed, so it shares the data. Memory: fresh, empty state."""
        changed = self.settings.model_copy(update=settings)
        opened = shared_state_from_settings(changed, clock=self.clock)
        self._opened.append((opened, changed.redis_namespace))
        return opened

    async def advance(self, seconds: float) -> None:
        if self.name == "memory":
            self.clock.now += seconds
        else:
            await asyncio.sleep(seconds)

    async def aclose(self) -> None:
        """Leave a shared TEST_REDIS_URL clean (every namespace used), then close every handle."""
        client = self.state.client
        if client is not None:
            for ns in {self.settings.redis_namespace, *(ns for _, ns in self._opened)}:
                keys = [k async for k in client.scan_iter(match=f"{ns}:*")]
                if keys:
                    await client.delete(*keys)
        for handle in [self.state, *(h for h, _ in self._opened)]:
            await handle.aclose()


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[StateBackend]:
    """Every shared-state backend of one kind, from one factory call (response cache included)."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    settings = Settings(
        redis_url=url,
        redis_namespace=f"test-{uuid.uuid4().hex[:12]}",
        response_cache="redis" if url else "memory",
        idempotency_ttl_s=60.0,
    )
    clock = FakeClock()
    b = StateBackend(request.param, settings, clock, shared_state_from_settings(settings, clock=clock))
    yield b
    await b.aclose()
