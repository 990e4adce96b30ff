"""The wire contract: every event the pipeline reads or writes.

These pydantic models are the single source of truth; `schemas/*.json` are generated from
them (`pipeline schemas`) and a test fails when the two drift. Producers in other languages
code against those JSON Schemas, so every change here is a contract change: add optional
fields freely, never rename or repurpose one without bumping `SCHEMA_VERSION`.

This module is the public import path (`from pipeline.contracts.models import ...`); the
models live by responsibility in `common` (version, codes, event base), `request_parts` and
`request` (what producers send), `reply` (replies and chunks) and `accounting` (usage rows,
budget alerts), and are re-exported here unchanged.
"""

from __future__ import annotations

from pydantic import BaseModel

from pipeline.contracts.accounting import BudgetAlert, UsageEvent
from pipeline.contracts.common import (
    CORRELATION_HEADER,
    DEFAULT_TENANT,
    SCHEMA_VERSION,
    AttemptOutcome,
    DeadLetterHeader,
    ErrorCode,
    RequestKind,
    SkipReason,
)
from pipeline.contracts.reply import (
    Attempt,
    CompletionChunk,
    CompletionReply,
    FallbackSource,
    ReplyChoice,
    ReplyError,
    ReplyStatus,
    RerankResult,
    RoutingInfo,
    SkippedCandidate,
    ToolCall,
    ToolCallFunction,
    Usage,
)
from pipeline.contracts.request import RERANK_FIELDS, CompletionRequest
from pipeline.contracts.request_parts import (
    MAX_CHOICES,
    MAX_FALLBACKS,
    MAX_INT32,
    MAX_INT64,
    MAX_LOGIT_BIAS,
    MAX_RERANK_DOCUMENT_CHARS,
    MAX_RERANK_DOCUMENTS,
    MAX_RERANK_QUERY_CHARS,
    MAX_STOP_SEQUENCES,
    ChatMessage,
    JsonSchemaFormat,
    LogitBias,
    NonEmptyStr,
    Penalty,
    ResponseFormat,
    Rfc3339,
    Stop,
    StopSequence,
    TokenId,
    Tool,
    ToolFunction,
    TopicName,
)

__all__ = [
    "CORRELATION_HEADER",
    "DEFAULT_TENANT",
    "MAX_CHOICES",
    "MAX_FALLBACKS",
    "MAX_INT32",
    "MAX_INT64",
    "MAX_LOGIT_BIAS",
    "MAX_RERANK_DOCUMENTS",
    "MAX_RERANK_DOCUMENT_CHARS",
    "MAX_RERANK_QUERY_CHARS",
    "MAX_STOP_SEQUENCES",
    "PUBLIC_EVENTS",
    "RERANK_FIELDS",
    "SCHEMA_VERSION",
    "Attempt",
    "AttemptOutcome",
    "BudgetAlert",
    "ChatMessage",
    "CompletionChunk",
    "CompletionReply",
    "CompletionRequest",
    "DeadLetterHeader",
    "ErrorCode",
    "FallbackSource",
    "JsonSchemaFormat",
    "LogitBias",
    "NonEmptyStr",
    "Penalty",
    "ReplyChoice",
    "ReplyError",
    "ReplyStatus",
    "RequestKind",
    "RerankResult",
    "ResponseFormat",
    "Rfc3339",
    "RoutingInfo",
    "SkipReason",
    "SkippedCandidate",
    "Stop",
    "StopSequence",
    "TokenId",
    "Tool",
    "ToolCall",
    "ToolCallFunction",
    "ToolFunction",
    "TopicName",
    "Usage",
    "UsageEvent",
]

#: Every public event, by the file name of its generated schema.
PUBLIC_EVENTS: dict[str, type[BaseModel]] = {
    "completion_request": CompletionRequest,
    "completion_reply": CompletionReply,
    "completion_chunk": CompletionChunk,
    "usage_event": UsageEvent,
    "budget_alert": BudgetAlert,
}
