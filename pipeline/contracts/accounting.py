"""The accounting events: `UsageEvent`, one row per provider call attempt for cost accounting in
ClickHouse, and `BudgetAlert`, published when spend crosses a budget's alert threshold. Both
are written by the pipeline for analytics and operators, not read back by it, so they are
apart from the request/reply exchange.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, field_validator

from pipeline.contracts.common import SCHEMA_VERSION, AttemptOutcome, ErrorCode, RequestKind, WireEvent


def _new_event_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


class UsageEvent(WireEvent):
    """One provider call attempt (failed ones included), for cost accounting in ClickHouse."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(default_factory=_new_event_id, description="Minted before the call; dedup key.")
    request_id: str
    tenant: str
    task_type: str
    requested_model: str = Field("", description="The request's explicit model, else its route's first choice.")
    model: str
    provider: str
    deployment: str = ""
    status: AttemptOutcome
    error_code: ErrorCode | None = None
    http_status: int = Field(0, description="The provider's HTTP status (200 on success, 0 if none).")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = Field(0, description="Cache reads (OpenAI cached_tokens, Anthropic cache_read_input_tokens), "
                                              "part of prompt_tokens.")
    reasoning_tokens: int = Field(0, description="Reasoning tokens, part of completion_tokens.")
    cache_write_tokens: int = Field(0, description="Prompt tokens written to the provider's cache (Anthropic "
                                                   "cache_creation_input_tokens), part of prompt_tokens.")
    audio_input_tokens: int = Field(0, description="Audio tokens, part of prompt_tokens.")
    audio_output_tokens: int = Field(0, description="Audio tokens, part of completion_tokens.")
    image_input_tokens: int = Field(0, description="Image tokens, part of prompt_tokens.")
    total_tokens: int = 0
    cost_usd: float = Field(0.0, description="USD, priced by token class from the usage details "
                                             "(docs/analytics.md, Exact cost).")
    latency_ms: float = 0.0
    ttft_ms: float = Field(0.0, description="Time to first token (streaming); 0 when not streamed.")
    kind: RequestKind = RequestKind.COMPLETION
    streamed: bool = False
    cache_hit: bool = Field(False, description="Answered from the response cache: no provider call; cost 0 "
                                               "unless shared_cache_hit.")
    shared_cache_hit: bool = Field(
        False, description="A cache hit on another tenant's answer (PIPELINE_RESPONSE_CACHE_SCOPE=shared): booked "
                           "to this tenant at what the call would have cost, though no provider was paid.")
    tokens_estimated: bool = Field(
        False, description="The token counts were counted from the text with LiteLLM's tokenizer: the provider "
                           "sent none (typically a stream that broke part way, whose delivered tokens are billed).")
    attempt: int = Field(ge=1, description="1-based position of this call within the request.")
    is_fallback: bool = False
    is_final: bool = Field(False, description="This attempt's result became the reply.")
    attributes: dict[str, str] = Field(default_factory=dict)
    route_skipped: list[str] = Field(default_factory=list, description="'model:reason' for each candidate passed over.")
    budget_downgrade: bool = False
    ts: datetime = Field(default_factory=_now)

    @field_validator("ts")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)


class BudgetAlert(WireEvent):
    """Published once per budget window when spend crosses the alert threshold (topic llm.alerts)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    alert_id: str = Field(default_factory=_new_event_id)
    budget: str = Field(description="e.g. 'tenant acme daily'.")
    key: str = Field(description="Budget and window, e.g. 'tenant=acme:daily:2026-11-23'.")
    limit_usd: float
    spent_usd: float
    threshold: float
    ts: datetime = Field(default_factory=_now)
