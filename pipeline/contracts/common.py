"""The contract's shared vocabulary: the schema version, the correlation header, the default
tenant, the machine-readable codes (errors, router skips, request kinds, attempt outcomes,
dead-letter headers) and the base every event model derives from. Requests, replies and
accounting events all speak these, so they live apart from any one event and import nothing
of theirs.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION: Final = 1

#: Header carrying the request id on replies (and accepted on requests).
CORRELATION_HEADER = "correlation_id"

#: The tenant of a request that names none: its idempotency namespace, budget and reply topics.
DEFAULT_TENANT: Final = "default"


class ErrorCode(StrEnum):
    """Machine-readable reasons carried by error replies and dead-letter records."""

    # Input that never reached a provider.
    INVALID_JSON = "invalid_json"
    SCHEMA_INVALID = "schema_invalid"
    TOO_LARGE = "too_large"
    REPLY_TOPIC_NOT_ALLOWED = "reply_topic_not_allowed"
    UNAUTHENTICATED = "unauthenticated"  # the record may not act for its tenant (PIPELINE_TENANT_AUTH)
    UNKNOWN_MODEL = "unknown_model"
    NO_ROUTE = "no_route"
    NO_ELIGIBLE_MODEL = "no_eligible_model"
    BUDGET_EXCEEDED = "budget_exceeded"
    # Provider outcomes (per attempt, and for the final reply when every candidate failed).
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"  # the account's quota or credit is spent: not a rate limit
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    CONTEXT_WINDOW_EXCEEDED = "context_window_exceeded"
    CONTENT_POLICY = "content_policy"
    AUTH_ERROR = "auth_error"
    BAD_REQUEST = "bad_request"
    MALFORMED_RESPONSE = "malformed_response"
    PROVIDER_ERROR = "provider_error"
    ALL_CANDIDATES_FAILED = "all_candidates_failed"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INTERNAL_ERROR = "internal_error"
    REPLY_UNDELIVERABLE = "reply_undeliverable"  # the reply topic refused the reply for good (dead letters only)
    UNDECODABLE_RECORD = "undecodable_record"  # the Kafka client could not decode the record (dead letters only)
    # Request features.
    UNKNOWN_TEMPLATE = "unknown_template"
    TEMPLATE_VARIABLES = "template_variables"
    INVALID_STRUCTURED_OUTPUT = "invalid_structured_output"
    STREAM_INTERRUPTED = "stream_interrupted"


class SkipReason(StrEnum):
    """Why the router passed over a candidate model for a request."""

    DISABLED = "disabled"
    MISSING_CAPABILITY = "missing_capability"
    CONTEXT_TOO_LONG = "context_too_long"
    OVER_COST_CEILING = "over_cost_ceiling"
    COOLING_DOWN = "cooling_down"
    RATE_LIMIT_REACHED = "rate_limit_reached"
    BUDGET_EXCEEDED = "budget_exceeded"
    LARGER_CONTEXT_NEEDED = "larger_context_needed"
    #: A context-window or content-policy fallback: no failure of its kind came before it.
    FALLBACK_NOT_TRIGGERED = "fallback_not_triggered"


class RequestKind(StrEnum):
    COMPLETION = "completion"
    EMBEDDING = "embedding"
    RERANK = "rerank"


class AttemptOutcome(StrEnum):
    OK = "ok"
    ERROR = "error"


class DeadLetterHeader(StrEnum):
    """Headers on a dead-letter record; its value is the original message bytes, unchanged."""

    REASON = "dlq_reason"
    DETAIL = "dlq_detail"
    SOURCE_TOPIC = "dlq_source_topic"
    SOURCE_PARTITION = "dlq_source_partition"
    SOURCE_OFFSET = "dlq_source_offset"
    REQUEST_ID = "dlq_request_id"
    FAILED_AT = "dlq_failed_at"
    ATTEMPTS = "dlq_attempts"
    VALUE_OMITTED = "dlq_value_omitted"  # the original did not fit the DLQ: its size and why; the value is empty


class WireEvent(BaseModel):
    """Base of every event: unknown fields are rejected so typos surface as errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)
