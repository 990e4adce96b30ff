"""Shared worker state. The factory below is the one place that picks the backend."""

from __future__ import annotations

from pipeline.state.processed import (
    Claim,
    ClaimKind,
    InProcessStore,
    ProcessedStore,
    RedisStore,
)

__all__ = [
    "Claim",
    "ClaimKind",
    "InProcessStore",
    "ProcessedStore",
    "RedisStore",
    "processed_store_from_settings",
]


def processed_store_from_settings(
    redis_url: str | None,
    *,
    namespace: str = "llm-pipeline",
    reply_ttl_s: float = 86400,
    max_entries: int = 100_000,
) -> ProcessedStore:
    """No Redis URL (None or blank) -> in-process state, right for a single worker; else Redis.

    `max_entries` bounds only the in-process store; Redis bounds itself by the reply TTL.
    Connecting is lazy, so this never blocks and never fails on an unreachable Redis.
    """
    if redis_url is None or not redis_url.strip():
        return InProcessStore(reply_ttl_s=reply_ttl_s, max_entries=max_entries)
    return RedisStore(redis_url.strip(), namespace=namespace, reply_ttl_s=reply_ttl_s)
