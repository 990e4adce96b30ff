"""The AsyncAPI 3.0 document of every topic the worker reads and writes, built by FastStream.

The topics are declared on a `KafkaBroker` that is never connected: subscribers for what the
worker (and its usage sink) consume, publishers for what it produces, each with the pydantic
contract from `pipeline.contracts.models` as its payload. FastStream's own specification machinery
(`faststream.specification.AsyncAPI`) turns that into the document; what each topic carries is
in `asyncapi_channels.py`. FastStream 0.7 cannot say
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
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI, Specification, get_asyncapi_html
from faststream.specification.asyncapi.v3_0_0.schema import ApplicationSchema

from pipeline.contracts.asyncapi_channels import Channel, channels
from pipeline.contracts.models import (
    SCHEMA_VERSION,
)
from pipeline.settings import Settings

log = logging.getLogger(__name__)

#: Where `pipeline docs --write` puts the document, relative to the repository root.
ASYNCAPI_FILE = Path("schemas") / "asyncapi.json"

TITLE = "llm-pipeline"
KAFKA_BINDING_VERSION = "0.4.0"  # what FastStream 0.7 writes on channels


def _declare(broker: KafkaBroker, channels: list[Channel]) -> None:
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

    def __init__(self, broker: KafkaBroker, channels: list[Channel], **kwargs: Any) -> None:
        super().__init__(broker, **kwargs)
        self._channels = channels

    def to_specification(self) -> Specification:
        doc = super().to_specification().to_jsonable()
        _enrich(doc, self._channels)
        return ApplicationSchema.model_validate(doc)


def _enrich(doc: dict[str, Any], channels: list[Channel]) -> None:
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
    declared = channels(s)
    broker = KafkaBroker(
        s.kafka_bootstrap_servers,
        description="The Kafka cluster (KAFKA_BOOTSTRAP_SERVERS); the host here is the local default.",
    )
    _declare(broker, declared)
    spec = _PipelineAsyncAPI(
        broker,
        declared,
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
