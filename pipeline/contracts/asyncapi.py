"""The AsyncAPI 3.0 document of every topic the worker reads and writes, built by FastStream.

The topics are declared on a `KafkaBroker` that is never connected: subscribers for what the
worker (and its usage sink) consume, publishers for what it produces, each with the pydantic
contract from `pipeline.contracts.models` as its payload. FastStream's own specification machinery
(`faststream.specification.AsyncAPI`) turns that into the document. FastStream 0.7 cannot say
everything a producer needs (message headers, the Kafka key, where the correlation id lives,
that requests get replies), so `_PipelineAsyncAPI` adds those AsyncAPI 3.0 fields to what it
generates and re-validates the result with FastStream's AsyncAPI 3.0 model.

`schemas/asyncapi.json` is the committed copy (`pipeline docs --write`); a test fails when it
drifts from the code. `faststream docs gen --factory pipeline.contracts.asyncapi:asyncapi_app` produces the
same document. `serve_docs` serves it as FastStream's HTML page (the AsyncAPI React component,
loaded from unpkg.com by the browser) plus the raw JSON at `/asyncapi.json`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any, Literal

from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI, Specification, get_asyncapi_html
from faststream.specification.asyncapi.v3_0_0.schema import ApplicationSchema
from pydantic import Field

from pipeline.contracts.models import (
    CORRELATION_HEADER,
    SCHEMA_VERSION,
    BudgetAlert,
    CompletionChunk,
    CompletionReply,
    CompletionRequest,
    DeadLetterHeader,
    ErrorCode,
    UsageEvent,
)
from pipeline.settings import Settings

log = logging.getLogger(__name__)

#: Where `pipeline docs --write` puts the document, relative to the repository root.
ASYNCAPI_FILE = Path("schemas") / "asyncapi.json"

TITLE = "llm-pipeline"
KAFKA_BINDING_VERSION = "0.4.0"  # what FastStream 0.7 writes on channels

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
class _Channel:
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


def _channels(s: Settings) -> list[_Channel]:
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
        _Channel(
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
        _Channel(
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
        _Channel(
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
        _Channel(
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
        _Channel(
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
        _Channel(
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
        _Channel(
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


def _declare(broker: KafkaBroker, channels: list[_Channel]) -> None:
    """Subscribers and publishers for FastStream's specification; the broker is never started."""
    for ch in channels:
        if ch.action == "receive":
            model = ch.payload

            async def _handler(body: Any) -> None:  # pragma: no cover - documentation only
                raise NotImplementedError

            _handler.__annotations__ = {"body": model, "return": None}
            broker.subscriber(ch.topic, title=ch.id, description=ch.description)(_handler)
        else:
            broker.publisher(ch.topic, title=ch.id, description=ch.description, schema=ch.payload)


class _PipelineAsyncAPI(AsyncAPI):
    """FastStream's AsyncAPI 3.0 document, plus what a producer needs and FastStream 0.7 does not write."""

    def __init__(self, broker: KafkaBroker, channels: list[_Channel], **kwargs: Any) -> None:
        super().__init__(broker, **kwargs)
        self._channels = channels

    def to_specification(self) -> Specification:
        doc = super().to_specification().to_jsonable()
        _enrich(doc, self._channels)
        return ApplicationSchema.model_validate(doc)


def _enrich(doc: dict[str, Any], channels: list[_Channel]) -> None:
    messages = doc["components"]["messages"]
    for ch in channels:
        channel = doc["channels"][ch.id]
        channel["title"] = ch.title
        channel["summary"] = ch.summary
        for ref in channel["messages"].values():
            message = messages[ref["$ref"].rsplit("/", 1)[-1]]
            message["summary"] = ch.summary
            message["headers"] = ch.headers
            message["bindings"] = {"kafka": {"key": ch.key, "bindingVersion": KAFKA_BINDING_VERSION}}
            if ch.content_type:
                message["contentType"] = ch.content_type
            if ch.correlation is None:
                message.pop("correlationId", None)
            else:
                message["correlationId"] = {"location": ch.correlation}
        operation = doc["operations"][ch.id]
        operation["title"] = ch.title
        operation["summary"] = ch.summary
        operation.update(ch.extra_operation)


def _default_settings() -> Settings:
    """Default topic names, whatever the environment says: the committed document must not vary."""
    return Settings.model_construct()


def _info_description(s: Settings) -> str:
    return "\n".join(
        [
            ("Event API of the LLM request pipeline. Upstream services publish a JSON `CompletionRequest` "
            f"to `{s.topic_requests}`; a worker routes it to a model, calls it (with fallbacks), and publishes "
            f"one `CompletionReply` to the request's `reply_to` or `{s.topic_replies}`, plus one `UsageEvent` "
            f"per provider call to `{s.topic_usage}`."),
            "",
            (f"Payloads are JSON (UTF-8), wire contract v{SCHEMA_VERSION}; the same JSON Schemas are in "
            "`schemas/*.schema.json`. Channels are described from the worker's side: `receive` = you "
            "publish, `send` = you read. Topic names are the defaults (`PIPELINE_TOPIC_*` changes them). "
            "Producer guide: `docs/producers.md`."),
        ]
    )


def asyncapi_app(settings: Settings | None = None) -> FastStream:
    """A never-started FastStream app whose `schema` is the document (for `faststream docs gen --factory`)."""
    s = settings or _default_settings()
    channels = _channels(s)
    broker = KafkaBroker(
        s.kafka_bootstrap_servers,
        description="The Kafka cluster (KAFKA_BOOTSTRAP_SERVERS); the host here is the local default.",
    )
    _declare(broker, channels)
    spec = _PipelineAsyncAPI(
        broker,
        channels,
        title=TITLE,
        version=f"{SCHEMA_VERSION}.0.0",
        description=_info_description(s),
        schema_version="3.0.0",
    )
    return FastStream(broker, specification=spec, logger=None)


def build_specification(settings: Settings | None = None) -> Specification:
    return asyncapi_app(settings).schema.to_specification()


def build_asyncapi(settings: Settings | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document as a dict with sorted keys (default topic names when `settings` is None)."""
    doc = build_specification(settings).to_jsonable()
    return json.loads(json.dumps(doc, sort_keys=True))


def render_asyncapi(settings: Settings | None = None) -> str:
    """The committed file's text: deterministic (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(build_asyncapi(settings), indent=2, sort_keys=True) + "\n"


def write_asyncapi(path: Path | str = ASYNCAPI_FILE, settings: Settings | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_asyncapi(settings), encoding="utf-8")
    return path


def asyncapi_drifted(path: Path | str = ASYNCAPI_FILE) -> bool:
    """True when the file is missing or differs from what the code generates (default topic names)."""
    path = Path(path)
    return not path.exists() or path.read_text(encoding="utf-8") != render_asyncapi()


class _DocsHandler(BaseHTTPRequestHandler):
    def __init__(self, *args: Any, html: bytes, document: bytes, **kwargs: Any) -> None:
        self._html, self._document = html, document
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(self._html, "text/html; charset=utf-8")
        elif path == "/asyncapi.json":
            self._send(self._document, "application/json")
        else:
            self._send(b"not found; try / or /asyncapi.json\n", "text/plain; charset=utf-8", HTTPStatus.NOT_FOUND)

    def _send(self, body: bytes, content_type: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("docs: %s", format % args)


def docs_server(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> ThreadingHTTPServer:
    """A bound, not yet serving HTTP server: `/` is the AsyncAPI page, `/asyncapi.json` the document.

    The page is FastStream's `get_asyncapi_html`: the document is inlined, but the browser loads the
    AsyncAPI React component (JS and CSS) from unpkg.com, so viewing it needs internet access.
    """
    spec = build_specification(settings)
    html = get_asyncapi_html(spec, try_it_out_path=None).encode()
    document = render_asyncapi(settings).encode()
    return ThreadingHTTPServer((host, port), partial(_DocsHandler, html=html, document=document))


def serve_docs(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    """Serve the AsyncAPI page until interrupted (Ctrl+C). Port 0 picks a free port."""
    server = docs_server(host, port, settings)
    bound_host, bound_port = server.server_address[:2]
    if isinstance(bound_host, bytes | bytearray):  # typed so, but a bound AF_INET socket reports a str host
        bound_host = bound_host.decode()
    print(
        f"AsyncAPI docs on http://{bound_host}:{bound_port}/ (document: /asyncapi.json); "
        "the page loads its viewer from unpkg.com. Ctrl+C stops.",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


__all__ = [
    "ASYNCAPI_FILE",
    "asyncapi_app",
    "asyncapi_drifted",
    "build_asyncapi",
    "build_specification",
    "docs_server",
    "render_asyncapi",
    "serve_docs",
    "write_asyncapi",
]
