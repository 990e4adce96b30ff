"""Shared worker state. `factory.shared_state_from_settings` is the one place that picks the backends."""

from __future__ import annotations

from pipeline.state.factory import SharedState, shared_state_from_settings
from pipeline.state.processed import (
    Claim,
    ClaimKind,
    InProcessStore,
    ProcessedStore,
    RedisStore,
    RequestKey,
)

__all__ = [
    "Claim",
    "ClaimKind",
    "InProcessStore",
    "ProcessedStore",
    "RedisStore",
    "RequestKey",
    "SharedState",
    "shared_state_from_settings",
]
