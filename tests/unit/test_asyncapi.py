"""The committed AsyncAPI document is what the code generates, and it states the wire contract."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.contracts.asyncapi import (
    asyncapi_drifted,
    build_asyncapi,
    docs_server,
    render_asyncapi,
    write_asyncapi,
)
from pipeline.contracts.models import CORRELATION_HEADER, DeadLetterHeader
from pipeline.settings import Settings

_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
ASYNCAPI = Path(__file__).resolve().parents[2] / "schemas" / "asyncapi.json"
DEFAULTS = Settings.model_construct()


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _topics(doc: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(topic, worker action) -> title of the payload schema."""
    out = {}
    for op in doc["operations"].values():
        channel = _resolve(doc, op["channel"]["$ref"])
        (message_ref,) = op["messages"]
        message = _resolve(doc, _resolve(doc, message_ref["$ref"])["$ref"])
        payload = _resolve(doc, message["payload"]["$ref"])
        out[(channel["address"], op["action"])] = payload["title"]
    return out


def _message(doc: dict[str, Any], channel_id: str) -> dict[str, Any]:
    (ref,) = doc["channels"][channel_id]["messages"].values()
    return _resolve(doc, ref["$ref"])


def test_asyncapi_does_not_drift() -> None:
    assert not asyncapi_drifted(ASYNCAPI), "schemas/asyncapi.json is stale: run `pipeline docs --write` and commit it"


def test_drift_is_detected(tmp_path: Path) -> None:
    path = write_asyncapi(tmp_path / "asyncapi.json")
    assert not asyncapi_drifted(path)
    doc = json.loads(path.read_text())
    doc["channels"]["requests"]["address"] = "elsewhere"
    path.write_text(json.dumps(doc))
    assert asyncapi_drifted(path)
    assert asyncapi_drifted(tmp_path / "missing.json")


def test_generation_is_deterministic_and_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    first = render_asyncapi()
    monkeypatch.setenv("PIPELINE_TOPIC_REQUESTS", "somewhere.else")
    assert render_asyncapi() == first
    assert list(build_asyncapi()) == sorted(build_asyncapi())


def test_every_topic_is_listed_with_its_payload() -> None:
    doc = json.loads(ASYNCAPI.read_text())
    assert doc["asyncapi"] == "3.0.0"
    s = DEFAULTS
    assert _topics(doc) == {
        (s.topic_requests, "receive"): "CompletionRequest",
        (s.topic_usage, "receive"): "UsageEvent",
        (s.topic_replies, "send"): "replies:Message:Payload",
        (s.topic_usage, "send"): "UsageEvent",
        (s.topic_dlq, "send"): "DeadLetteredRequest",
        (s.topic_usage_dlq, "send"): "DeadLetteredUsageEvent",
        (s.topic_alerts, "send"): "BudgetAlert",
    }
    replies = doc["components"]["schemas"]["replies:Message:Payload"]["anyOf"]
    assert replies == [{"$ref": "#/components/schemas/CompletionReply"},
                       {"$ref": "#/components/schemas/CompletionChunk"}]  # the reply topic carries both


def test_custom_topic_names_are_used() -> None:
    settings = Settings.model_construct(topic_requests="team.req", topic_replies="team.rep")
    addresses = {c["address"] for c in build_asyncapi(settings)["channels"].values()}
    assert {"team.req", "team.rep"} <= addresses
    assert DEFAULTS.topic_requests not in addresses


def test_request_payload_states_the_contract() -> None:
    doc = json.loads(ASYNCAPI.read_text())
    request = doc["components"]["schemas"]["CompletionRequest"]
    assert set(request["required"]) == {"request_id", "task_type"}
    completion = request["allOf"][0]["else"]["else"]  # neither kind embedding nor kind rerank
    assert [one["required"] for one in completion["oneOf"]] == [["messages"], ["template"]]
    assert completion["oneOf"][0]["properties"]["messages"] == {"not": {"type": "null"}}
    assert request["additionalProperties"] is False
    assert request["examples"], "producers need an example"


def test_producer_facing_headers_keys_and_replies() -> None:
    doc = json.loads(ASYNCAPI.read_text())
    reply = _message(doc, "replies")
    assert reply["headers"]["required"] == [CORRELATION_HEADER]
    assert reply["correlationId"]["location"] == f"$message.header#/{CORRELATION_HEADER}"
    assert "key" in reply["bindings"]["kafka"]
    assert CORRELATION_HEADER in _message(doc, "requests")["headers"]["properties"]
    # Request/reply: the answer goes to the request's reply_to, else the replies channel.
    op = doc["operations"]["requests"]
    assert op["reply"]["address"]["location"] == "$message.payload#/reply_to"
    assert op["reply"]["channel"]["$ref"] == "#/channels/replies"
    assert "{replies}.{tenant}" in doc["channels"]["replies"]["description"]  # the per-tenant default patterns
    # Every dead-letter header is documented, as a header and in the description.
    dlq = _message(doc, "requests-dlq")
    assert set(dlq["headers"]["properties"]) == {h.value for h in DeadLetterHeader}
    for header in DeadLetterHeader:
        assert f"`{header.value}`" in doc["channels"]["requests-dlq"]["description"]
    assert dlq["contentType"] == "application/octet-stream"


@pytest.fixture
def docs_url() -> Iterator[str]:
    server = docs_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_docs_server_serves_the_page_and_the_document(docs_url: str) -> None:
    with _HTTP.open(f"{docs_url}/", timeout=5) as resp:
        html = resp.read().decode()
    assert resp.headers["content-type"].startswith("text/html")
    assert "AsyncApiStandalone.render" in html and "CompletionRequest" in html
    with _HTTP.open(f"{docs_url}/asyncapi.json", timeout=5) as resp:
        assert json.loads(resp.read()) == build_asyncapi()
    with pytest.raises(urllib.error.HTTPError) as err:
        _HTTP.open(f"{docs_url}/nope", timeout=5)
    err.value.close()  # an HTTPError holds the response's socket
    assert err.value.code == 404
