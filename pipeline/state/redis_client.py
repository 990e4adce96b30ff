"""The one way state backends connect to Redis."""

from __future__ import annotations

from typing import Any


def connect(url: str, *, max_connections: int = 100) -> Any:
    """A client on a *blocking* pool: a burst of more concurrent commands than connections waits
    for one (up to 10 s) instead of failing with MaxConnectionsError, redis-py's default."""
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=10)
    return aioredis.Redis.from_pool(pool)


def is_redis_outage(exc: BaseException) -> bool:
    """Redis unreachable or too slow: retry later. (A wrong command or script is a bug, not an outage.)"""
    try:
        from redis.exceptions import BusyLoadingError, ConnectionError, TimeoutError
    except ImportError:  # pragma: no cover - redis is a dependency
        return False
    return isinstance(exc, (ConnectionError, TimeoutError, BusyLoadingError))
