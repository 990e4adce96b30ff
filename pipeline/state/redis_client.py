"""The one way state backends connect to Redis."""

from __future__ import annotations

from typing import Any


def connect(url: str, *, max_connections: int = 100) -> Any:
    """A client on a *blocking* pool: a burst of more concurrent commands than connections waits
    for one (up to 10 s) instead of failing with MaxConnectionsError, redis-py's default."""
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=10)
    return aioredis.Redis.from_pool(pool)
