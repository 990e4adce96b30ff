"""Validate stage: raw Kafka bytes -> a CompletionRequest, or a Rejection saying why not."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from pipeline.contracts import CompletionRequest, ErrorCode


@dataclass(frozen=True, slots=True)
class Rejection:
    """Input refused before routing. `dead_letter` says whether the bytes go to the DLQ."""

    code: ErrorCode
    detail: str
    dead_letter: bool
    request_id: str | None = None
    reply_to: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _describe(error: ValidationError) -> str:
    parts = []
    for e in error.errors()[:5]:
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']}")
    more = len(error.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _salvage(doc: Any) -> tuple[str | None, str | None, dict[str, Any]]:
    """Read what an error reply needs from a document that failed validation."""
    if not isinstance(doc, dict):
        return None, None, {}
    rid = doc.get("request_id")
    reply_to = doc.get("reply_to")
    metadata = doc.get("metadata")
    return (
        rid if isinstance(rid, str) and 0 < len(rid) <= 256 else None,
        reply_to if isinstance(reply_to, str) and reply_to else None,
        metadata if isinstance(metadata, dict) else {},
    )


def validate_request(
    raw: bytes | None, *, max_bytes: int, reply_topic_allowed: Any
) -> CompletionRequest | Rejection:
    """Decide whether `raw` is a request we may act on.

    `reply_topic_allowed` is a predicate over topic names, so a request can never make the
    worker write into an arbitrary topic.
    """
    if raw is None:
        return Rejection(ErrorCode.INVALID_JSON, "message has no value (tombstone)", dead_letter=True)
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if len(raw) > max_bytes:
            return Rejection(ErrorCode.TOO_LARGE, f"{len(raw)} bytes exceeds the limit of {max_bytes}", True)
        return Rejection(ErrorCode.INVALID_JSON, f"not valid JSON: {exc}", dead_letter=True)
    request_id, reply_to, metadata = _salvage(doc)
    if len(raw) > max_bytes:
        return Rejection(
            ErrorCode.TOO_LARGE, f"{len(raw)} bytes exceeds the limit of {max_bytes}", True, request_id, None, metadata
        )
    try:
        request = CompletionRequest.model_validate(doc)
    except ValidationError as exc:
        allowed_reply_to = reply_to if reply_to and reply_topic_allowed(reply_to) else None
        return Rejection(ErrorCode.SCHEMA_INVALID, _describe(exc), True, request_id, allowed_reply_to, metadata)
    if request.reply_to is not None and not reply_topic_allowed(request.reply_to):
        return Rejection(
            ErrorCode.REPLY_TOPIC_NOT_ALLOWED,
            f"reply_to {request.reply_to!r} is not an allowed reply topic",
            dead_letter=False,
            request_id=request.request_id,
            metadata=request.metadata,
        )
    return request
