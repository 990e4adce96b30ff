"""Validate stage: raw Kafka bytes -> a CompletionRequest, or a Rejection saying why not."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson
from pydantic import ValidationError

from pipeline.contracts.models import DEFAULT_TENANT, CompletionRequest, ErrorCode
from pipeline.contracts.schema_export import event_schema
from pipeline.contracts.wire_rules import bounds_problem, is_rfc3339, topic_name_problem


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


@lru_cache(maxsize=1)
def contract_validator() -> Any:
    """The published request schema (`schemas/completion_request.schema.json`) as a validator,
    with `date-time` checked as RFC 3339: producers in other languages validate with the same."""
    from jsonschema import Draft202012Validator, FormatChecker

    checker = FormatChecker(formats=())
    checker.checks("date-time")(is_rfc3339)
    return Draft202012Validator(event_schema("completion_request"), format_checker=checker)


def _describe_schema_error(error: Any) -> str:
    from jsonschema.exceptions import best_match

    best = best_match([error])
    loc = ".".join(str(x) for x in best.absolute_path) or "<root>"
    return f"{loc}: {best.message}"[:1000]


def _salvage(doc: Any) -> tuple[str | None, str | None, dict[str, Any]]:
    """Read what an error reply needs from a document that failed validation: a reply_to only
    if it is a legal topic name (the allow-list is checked by the caller)."""
    if not isinstance(doc, dict):
        return None, None, {}
    rid = doc.get("request_id")
    reply_to = doc.get("reply_to")
    metadata = doc.get("metadata")
    return (
        rid if isinstance(rid, str) and 0 < len(rid) <= 256 and _utf8(rid) else None,
        reply_to if isinstance(reply_to, str) and topic_name_problem(reply_to) is None else None,
        metadata if isinstance(metadata, dict) and _utf8(metadata) else {},
    )


def _salvage_tenant(doc: Any) -> str | None:
    """The tenant whose reply-topic patterns an error reply obeys: the contract's default when the
    document names none, None (no tenant topics) when the one it names is not a usable string."""
    if not isinstance(doc, dict) or "tenant" not in doc:
        return DEFAULT_TENANT
    tenant = doc.get("tenant")
    return tenant if isinstance(tenant, str) and tenant and _utf8(tenant) else None


def _allowed(reply_topic_allowed: Any, reply_to: str | None, tenant: str | None) -> str | None:
    """`reply_to` when the predicate lets `tenant` reply there, else None (the default reply topic)."""
    return reply_to if reply_to and reply_topic_allowed(reply_to, tenant) else None


def _utf8(value: Any) -> bool:
    """Whether UTF-8 can carry it (a lone surrogate cannot go into a header or a reply)."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except (UnicodeEncodeError, RecursionError, ValueError):
        return False
    return True


def _salvage_unparsable(raw: bytes) -> tuple[str | None, str | None, str | None]:
    """request_id and reply_to of JSON we refuse to act on (an out-of-range number, a lone
    surrogate elsewhere), so the caller still gets an error reply; None for bytes that are not JSON."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None, None, None
    request_id, reply_to, _ = _salvage(doc)
    return request_id, reply_to, _salvage_tenant(doc)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


#: An integer literal of 20+ digits may be beyond 64 bits, which orjson reads as a float.
_LONG_INTEGER = re.compile(rb"(?<![\d.eE+\-])-?\d{20,}(?![\d.eE])")


def parse_json(raw: bytes) -> Any:
    """Any RFC 8259 document whose strings UTF-8 can carry. orjson first (fast); the standard
    library where orjson would lose what JSON allows (integers beyond 64 bits, read exactly).
    Never NaN or Infinity, never a lone surrogate. ValueError if not acceptable."""
    if not _LONG_INTEGER.search(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as fast_error:
            problem: Exception = fast_error
    else:
        problem = ValueError("not JSON")
    try:
        doc = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        raise ValueError(str(problem)) from None
    try:
        json.dumps(doc, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ValueError("a string holds a lone surrogate escape, which UTF-8 cannot carry") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    return doc


def _metadata_bytes(doc: Any) -> int:
    metadata = doc.get("metadata") if isinstance(doc, dict) else None
    if not isinstance(metadata, dict) or not metadata:
        return 0
    try:
        return len(orjson.dumps(metadata))
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, or deeper than orjson encodes
        try:
            return len(json.dumps(metadata))
        except RecursionError:  # the depth bound refuses it
            return 0


def check_contract(doc: Any) -> CompletionRequest | str:
    """The request, or why the contract refuses it: the models and the published schema must
    agree (a property test holds them to it); the schema's verdict is the one applied."""
    try:
        request = CompletionRequest.model_validate(doc)
    except ValidationError as exc:
        return _describe(exc)
    error = next(contract_validator().iter_errors(doc), None)
    if error is not None:
        return _describe_schema_error(error)
    return request


def validate_request(
    raw: bytes | None, *, max_bytes: int, reply_topic_allowed: Any
) -> CompletionRequest | Rejection:
    """Decide whether `raw` is a request we may act on.

    `reply_topic_allowed(topic, tenant)` is a predicate over topic names and tenants, so a
    request can never make the worker write into an arbitrary topic, nor into another tenant's:
    an error reply of a refused document goes to its reply_to only when the tenant it names
    (the default one when it names none) may reply there.
    """
    if raw is None:
        return Rejection(ErrorCode.INVALID_JSON, "message has no value (tombstone)", dead_letter=True)
    try:
        doc = parse_json(raw)
    except ValueError as exc:
        if len(raw) > max_bytes:
            return Rejection(ErrorCode.TOO_LARGE, f"{len(raw)} bytes exceeds the limit of {max_bytes}", True)
        request_id, reply_to, tenant = _salvage_unparsable(raw)
        allowed = _allowed(reply_topic_allowed, reply_to, tenant)
        return Rejection(ErrorCode.INVALID_JSON, f"not valid JSON: {exc}", True, request_id, allowed)
    request_id, reply_to, metadata = _salvage(doc)
    if len(raw) > max_bytes:
        return Rejection(
            ErrorCode.TOO_LARGE, f"{len(raw)} bytes exceeds the limit of {max_bytes}", True, request_id, None, metadata
        )
    allowed_reply_to = _allowed(reply_topic_allowed, reply_to, _salvage_tenant(doc))
    too_much = bounds_problem(doc, metadata_bytes=_metadata_bytes(doc))
    if too_much is not None:
        return Rejection(ErrorCode.TOO_LARGE, too_much, True, request_id, allowed_reply_to)
    checked = check_contract(doc)
    if isinstance(checked, str):
        return Rejection(ErrorCode.SCHEMA_INVALID, checked, True, request_id, allowed_reply_to, metadata)
    request = checked
    if request.response_format is not None and (problem := request.response_format.schema_problem()):
        return Rejection(ErrorCode.BAD_REQUEST, problem, dead_letter=False, request_id=request.request_id,
                         reply_to=allowed_reply_to, metadata=request.metadata)
    if request.reply_to is not None and not reply_topic_allowed(request.reply_to, request.tenant):
        return Rejection(  # dead-lettered with the reason; the error reply goes to the default reply topic
            ErrorCode.REPLY_TOPIC_NOT_ALLOWED,
            f"reply_to {request.reply_to!r} is not an allowed reply topic for tenant {request.tenant!r}",
            dead_letter=True,
            request_id=request.request_id,
            metadata=request.metadata,
        )
    return request
