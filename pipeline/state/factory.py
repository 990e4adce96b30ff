"""The one place that picks the shared-state backends, and the one Redis pool they share.

A worker needs four kinds of shared state: processed requests (idempotency), budget ledgers,
deployment health (cooldowns, stats and the RPM/TPM limits) and, if enabled, the response
cache. With a Redis URL they all run over one client, so a worker holds one connection pool
instead of one per backend; without one they are in-process, right for a single worker.
Building connects nothing (redis-py connects on first use), so it never blocks and never fails
on an unreachable Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.state.budget import BudgetLedger, InProcessLedger, RedisLedger
from pipeline.state.health import HealthState, InProcessHealth, RedisHealth
from pipeline.state.processed import InProcessStore, ProcessedStore, RedisStore
from pipeline.state.redis_client import connect_from_settings
from pipeline.state.response_cache import MODES, InProcessResponseCache, RedisResponseCache, ResponseCache

if TYPE_CHECKING:
    from pipeline.settings import Settings

__all__ = ["SharedState", "shared_state_from_settings"]


@dataclass(frozen=True, slots=True)
class SharedState:
    """Every shared-state backend of one worker. `health` is also the rate limiter: RPM/TPM
    windows are part of `HealthState` (`try_acquire`), so they share its backend.

    `client` is the one Redis client every Redis backend runs over (None: all in-process). The
    backends never close it; `aclose()` closes each backend, then the client, once.
    """

    processed: ProcessedStore
    budgets: BudgetLedger
    health: HealthState
    response_cache: ResponseCache | None
    client: Any = None

    @property
    def shared(self) -> bool:
        """True when the state is in Redis, i.e. seen by every worker on the same namespace."""
        return self.client is not None

    async def aclose(self) -> None:
        try:
            for backend in (self.processed, self.budgets, self.health, self.response_cache):
                if backend is not None:
                    await backend.close()
        finally:
            if self.client is not None:
                await self.client.aclose()


def shared_state_from_settings(
    settings: Settings, *, clock: Callable[[], float] = time.monotonic
) -> SharedState:
    """Backends from `redis_url` (None or blank: in-process), `redis_namespace`, the idempotency
    TTL and size, and `response_cache` (off -> None, memory -> this worker's, redis -> the fleet's).

    `clock` times the in-process backends only (tests pass a fake one); Redis keeps its own time.
    A misconfigured cache raises before any client exists, so nothing is left to close.
    """
    mode = settings.response_cache.strip().lower()
    if mode not in MODES:
        raise ValueError(f"response_cache must be one of {', '.join(MODES)}; got {settings.response_cache!r}")
    url = (settings.redis_url or "").strip()
    if mode == "redis" and not url:
        raise ValueError("response_cache='redis' needs redis_url (REDIS_URL) to be set")
    memory_cache = (InProcessResponseCache(max_entries=settings.response_cache_max_entries, clock=clock)
                    if mode == "memory" else None)
    if not url:
        return SharedState(
            processed=InProcessStore(reply_ttl_s=settings.idempotency_ttl_s,
                                     max_entries=settings.idempotency_max_entries, clock=clock),
            budgets=InProcessLedger(),
            health=InProcessHealth(clock=clock),
            response_cache=memory_cache,
        )
    client = connect_from_settings(settings)  # REDIS_URL with its AUTH password and TLS CA, if any
    ns = settings.redis_namespace
    return SharedState(
        processed=RedisStore(url, namespace=ns, reply_ttl_s=settings.idempotency_ttl_s, client=client),
        budgets=RedisLedger(url, namespace=ns, client=client),
        health=RedisHealth(url, namespace=ns, client=client),
        response_cache=RedisResponseCache(url, namespace=ns, client=client) if mode == "redis" else memory_cache,
        client=client,
    )
