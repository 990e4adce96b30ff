"""What the AsyncAPI document says of each topic: its payload, headers, key and correlation.

The data behind `asyncapi.py`: one `Channel` per topic the worker and the usage sink read or
write, with the texts a producer in any language needs (what each header means, what the Kafka
key is, where the correlation id lives). `asyncapi.py` declares them on FastStream and adds to its
document what FastStream 0.7 does not write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field

from pipeline.contracts.models import (
    CORRELATION_HEADER,
    BudgetAlert,
    CompletionChunk,
    CompletionReply,
    CompletionRequest,
    DeadLetterHeader,
    ErrorCode,
    UsageEvent,
)
from pipeline.settings import Settings

_DLQ_HEADER_TEXT: dict[DeadLetterHeader, str] = {
    DeadLetterHeader.REASON: "Why, an ErrorCode value: `invalid_json`, `schema_invalid`, `too_large`, "
    "`reply_undeliverable` (the reply topic refused the reply for good), "
    "or `internal_error` once handling failed `dlq_attempts` times.",
    DeadLetterHeader.DETAIL: "Human-readable detail (at most 2000 characters), e.g. the validation errors.",
    DeadLetterHeader.SOURCE_TOPIC: "Topic the original record was read from.",
    DeadLetterHeader.SOURCE_PARTITION: "Its partition (decimal string).",
    DeadLetterHeader.SOURCE_OFFSET: "Its offset (decimal string).",
    DeadLetterHeader.REQUEST_ID: "The request_id, when it could be read from the bytes (the caller then also "
    "got an error reply).",
    DeadLetterHeader.FAILED_AT: "When it was dead-lettered (ISO 8601, UTC).",
    DeadLetterHeader.ATTEMPTS: "Tries before giving up; only on records whose handling raised (poison records).",
    DeadLetterHeader.VALUE_OMITTED: "Only when the original did not fit the dead-letter topic: its size and why; "
    "the value is then empty (the original stays in the source topic until its retention ends).",
}
_DLQ_ALWAYS = (
    DeadLetterHeader.REASON,
    DeadLetterHeader.DETAIL,
    DeadLetterHeader.SOURCE_TOPIC,
    DeadLetterHeader.SOURCE_PARTITION,
    DeadLetterHeader.SOURCE_OFFSET,
    DeadLetterHeader.FAILED_AT,
)


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _headers(properties: dict[str, str], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """JSON Schema of Kafka record headers (every header value is a UTF-8 string)."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {name: _string(text) for name, text in properties.items()},
    }
    if required:
        schema["required"] = list(required)
    return schema


def _bullets(*lines: str) -> str:
    return "\n".join(f"- {line}" for line in lines)


@dataclass(frozen=True)
class Channel:
    """One topic endpoint of the worker, and what FastStream cannot say about it."""

    id: str  # channel and operation id in the document (FastStream's `title`)
    topic: str
    action: Literal["receive", "send"]  # from the worker's point of view
    payload: Any  # pydantic model, or an annotated type for raw bytes
    title: str
    summary: str
    description: str
    headers: dict[str, Any]
    key: dict[str, Any]
    correlation: str | None  # runtime expression, None when there is nothing to correlate
    content_type: str | None = None
    extra_operation: dict[str, Any] = field(default_factory=dict)


def channels(s: Settings) -> list[Channel]:
    replies_pattern = ", ".join(f"`{p.strip()}`" for p in s.allowed_reply_topics.split(",") if p.strip())
    dlq_headers = {h.value: _DLQ_HEADER_TEXT[h] for h in DeadLetterHeader}
    usage_dlq_headers = {
        h.value: _DLQ_HEADER_TEXT[h]
        for h in DeadLetterHeader
        if h not in (DeadLetterHeader.REQUEST_ID, DeadLetterHeader.ATTEMPTS)
    }
    usage_dlq_headers[DeadLetterHeader.REASON.value] = "Why: `schema_invalid` (the bytes are not a valid UsageEvent)."
    request_key = _string(
        "Yours: any bytes, e.g. the request_id or the id of the entity the request is about. Records with the "
        "same key share a partition (processed in order when the worker sets PIPELINE_ORDERED_BY_KEY). "
        "The reply carries the same key; without one, the reply is keyed by request_id."
    )
    return [
        Channel(
            id="requests",
            topic=s.topic_requests,
            action="receive",
            payload=CompletionRequest,
            title="Completion requests (publish here)",
            summary="Upstream services publish one JSON CompletionRequest per record; the worker answers each one.",
            description="\n".join(
                [
                    (f"Publish a JSON `CompletionRequest` (UTF-8, at most {s.max_message_bytes} bytes) to "
                    f"`{s.topic_requests}`. Consumed by the consumer group `{s.consumer_group}`."),
                    "",
                    _bullets(
                        "**Required**: `request_id` (your id, 1-256 chars), `task_type` (selects the route), "
                        "`messages` (OpenAI chat format, non-empty). Unknown fields are rejected.",
                        "**Key**: yours; the reply comes back with the same key.",
                        f"**Header** `{CORRELATION_HEADER}`: set it to the request_id (optional: the worker "
                        "reads the id from the body).",
                        "**Header** `x-pipeline-signature` (PIPELINE_TENANT_AUTH=signature): `v1=` + hex "
                        "HMAC-SHA256 with the tenant's key over `v1:` + 4-byte big-endian key length + key + "
                        "value (docs/security.md); else the record is dead-lettered `unauthenticated`.",
                        f"**Reply**: on `reply_to` when set (it must match {replies_pattern}), else on "
                        f"`{s.topic_replies}`, with header `{CORRELATION_HEADER}` = request_id.",
                        "**Idempotent**: publishing the same request_id again is safe; the stored reply is "
                        "re-sent without a second provider call.",
                        "**Deadlines**: `deadline_ms` (from the record timestamp) or `deadline_at` (RFC 3339); "
                        "past it the reply is `deadline_exceeded`.",
                        f"**Bad records** (not JSON, schema-invalid, too large) go to `{s.topic_dlq}`; when the "
                        "request_id can be read you also get an error reply.",
                    ),
                ]
            ),
            headers=_headers(
                {CORRELATION_HEADER: "Optional; set it to the request_id. Replies always carry it.",
                 "x-pipeline-signature": "Signature mode only: v1=<hex HMAC-SHA256> of the record (docs/security.md)."}
            ),
            key=request_key,
            correlation="$message.payload#/request_id",
            extra_operation={
                "reply": {
                    "address": {
                        "location": "$message.payload#/reply_to",
                        "description": f"The request's `reply_to` when it matches {replies_pattern}; "
                        f"otherwise (or when unset) `{s.topic_replies}`.",
                    },
                    "channel": {"$ref": "#/channels/replies"},
                    "messages": [{"$ref": "#/channels/replies/messages/Message"}],
                }
            },
        ),
        Channel(
            id="replies",
            topic=s.topic_replies,
            action="send",
            payload=CompletionReply | CompletionChunk,
            title="Completion replies (read yours here)",
            summary="One CompletionReply per request, status `ok` with `content` or `error` with `error.code`; "
            "before it, for `stream: true`, CompletionChunk events (`type` tells them apart).",
            description="\n".join(
                [
                    (f"The default reply topic. A request whose `reply_to` matches {replies_pattern} is "
                    "answered there instead (e.g. a per-client reply topic; `{replies}` is this topic, "
                    "`{tenant}` the request's tenant, so a tenant replies only to its own topics); one whose "
                    f"`reply_to` does not match is dead-lettered and gets a "
                    f"`{ErrorCode.REPLY_TOPIC_NOT_ALLOWED.value}` error here."),
                    "",
                    _bullets(
                        "**Key**: the request's key (its request_id when it had none).",
                        f"**Header** `{CORRELATION_HEADER}`: the request_id. Match replies on it or on the "
                        "body's `request_id`; ignore replies you did not ask for.",
                        "Read without a consumer group (assign every partition, start at the end) or from "
                        "your own reply topic, so readers never take partitions from each other.",
                        "A redelivered or re-published request may be answered twice with identical bytes.",
                        "`metadata` is the request's, unchanged.",
                        "`type` is `reply` or `chunk`. A streamed request (`stream: true`) gets chunk events "
                        "(`stream_id`, `seq` from 0, `delta`) in order on the reply's partition, then its reply, "
                        "which names the `stream_id` and `stream_chunks` it was built from and carries the whole "
                        "`content`. A stream that restarts (worker crash) does so under a new `stream_id`.",
                    ),
                ]
            ),
            headers=_headers(
                {CORRELATION_HEADER: "The request_id of the request this answers."}, (CORRELATION_HEADER,)
            ),
            key=_string("The request's Kafka key, echoed; the request_id when the request had no key."),
            correlation=f"$message.header#/{CORRELATION_HEADER}",
        ),
        Channel(
            id="usage",
            topic=s.topic_usage,
            action="send",
            payload=UsageEvent,
            title="Usage events (one per provider call)",
            summary="One UsageEvent per provider call attempt, failed ones included, for cost accounting.",
            description=f"Written by the worker before the reply, one per attempt; `event_id` is the dedup key. "
            f"Read by the usage sink (`{s.usage_consumer_group}`), which stores them in ClickHouse. "
            "Other consumers may read them with their own group.",
            headers=_headers({CORRELATION_HEADER: "The request_id."}, (CORRELATION_HEADER,)),
            key=_string("The request_id."),
            correlation=f"$message.header#/{CORRELATION_HEADER}",
        ),
        Channel(
            id="usage-sink",
            topic=s.topic_usage,
            action="receive",
            payload=UsageEvent,
            title="Usage events (consumed by the usage sink)",
            summary="The usage sink batches usage events into ClickHouse, committing only after the insert.",
            description=f"Consumer group `{s.usage_consumer_group}`. Malformed events go to "
            f"`{s.topic_usage_dlq}`; well-formed ones are never dropped (the sink waits for ClickHouse).",
            headers=_headers({CORRELATION_HEADER: "The request_id."}),
            key=_string("The request_id."),
            correlation=f"$message.header#/{CORRELATION_HEADER}",
        ),
        Channel(
            id="requests-dlq",
            topic=s.topic_dlq,
            action="send",
            payload=Annotated[
                bytes,
                Field(
                    title="DeadLetteredRequest",
                    description=f"The original record value from `{s.topic_requests}`, byte for byte.",
                ),
            ],
            title="Dead-lettered requests",
            summary="Requests the worker could not act on: the original bytes, with the reason in headers.",
            description="\n".join(
                [
                    "Value: the original bytes, unchanged. Key: the original key. Headers:",
                    "",
                    _bullets(*(f"`{h.value}`: {text}" for h, text in _DLQ_HEADER_TEXT.items())),
                ]
            ),
            headers=_headers(dlq_headers, tuple(h.value for h in _DLQ_ALWAYS)),
            key=_string("The original record's key (absent when it had none)."),
            correlation=f"$message.header#/{DeadLetterHeader.REQUEST_ID.value}",
            content_type="application/octet-stream",
        ),
        Channel(
            id="usage-dlq",
            topic=s.topic_usage_dlq,
            action="send",
            payload=Annotated[
                bytes,
                Field(
                    title="DeadLetteredUsageEvent",
                    description=f"The original record value from `{s.topic_usage}`, byte for byte.",
                ),
            ],
            title="Dead-lettered usage events",
            summary="Usage records that are not a valid UsageEvent: the original bytes, with the reason in headers.",
            description="\n".join(
                [
                    "Value: the original bytes, unchanged. Key: the original key. Headers:",
                    "",
                    _bullets(*(f"`{name}`: {text}" for name, text in usage_dlq_headers.items())),
                ]
            ),
            headers=_headers(usage_dlq_headers, tuple(h.value for h in _DLQ_ALWAYS)),
            key=_string("The original record's key."),
            correlation=None,
            content_type="application/octet-stream",
        ),
        Channel(
            id="budget-alerts",
            topic=s.topic_alerts,
            action="send",
            payload=BudgetAlert,
            title="Budget alerts",
            summary="One BudgetAlert per budget window when spend crosses its alert threshold.",
            description="Published once per budget and window (e.g. a tenant's day) when month-to-date or "
            "day-to-date spend crosses `alert_threshold` of the limit. No headers.",
            headers=_headers({}),
            key=_string("The budget window, e.g. `tenant=acme:daily:2026-11-23` (the body's `key`)."),
            correlation=None,
        ),
    ]

