"""The handler's routing of outcomes to topics, with an in-memory Publisher (no broker needed)."""

from pathlib import Path

import orjson

from pipeline.catalog import load_catalog
from pipeline.contracts import CompletionReply
from pipeline.settings import Settings
from pipeline.transport.llm import ProviderResponse
from pipeline.worker.handler import RequestHandler
from pipeline.worker.records import SourceRecord

CATALOG = load_catalog(Path(__file__).resolve().parents[2] / "config")
SETTINGS = Settings(topic_replies="replies", topic_usage="usage", topic_dlq="dlq")


class MemoryPublisher:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes | None, dict[str, str]]] = []

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str]) -> None:
        self.records.append((topic, value, key, headers))

    def on(self, topic: str) -> list[tuple[str, bytes, bytes | None, dict[str, str]]]:
        return [r for r in self.records if r[0] == topic]


class Answering:
    async def complete(self, spec, request, *, timeout_s):  # noqa: ANN001, ANN201
        return ProviderResponse("fine", 5, 5)


class Buggy:
    async def complete(self, spec, request, *, timeout_s):  # noqa: ANN001, ANN201
        raise ZeroDivisionError("a bug, not a provider error")


def record(doc: dict | bytes, key: bytes = b"k1") -> SourceRecord:
    value = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return SourceRecord(topic="requests", partition=2, offset=41, value=value, key=key)


REQUEST = {"request_id": "r1", "task_type": "summarize", "messages": [{"role": "user", "content": "x"}]}


async def test_success_publishes_usage_then_reply_with_key_and_correlation() -> None:
    publisher = MemoryPublisher()
    await RequestHandler(SETTINGS, lambda: CATALOG, Answering(), publisher).handle(record(REQUEST))
    assert [r[0] for r in publisher.records] == ["usage", "replies"]  # usage acknowledged before the reply
    (_, value, key, headers), = publisher.on("replies")
    assert key == b"k1" and headers["correlation_id"] == "r1"
    assert CompletionReply.model_validate_json(value).status == "ok"


async def test_unexpected_error_dead_letters_and_replies() -> None:
    publisher = MemoryPublisher()
    await RequestHandler(SETTINGS, lambda: CATALOG, Buggy(), publisher).handle(record(REQUEST))
    (_, value, key, headers), = publisher.on("dlq")
    assert value == orjson.dumps(REQUEST) and key == b"k1"
    assert headers["dlq_reason"] == "internal_error" and "ZeroDivisionError" in headers["dlq_detail"]
    assert headers["dlq_source_partition"] == "2" and headers["dlq_source_offset"] == "41"
    assert headers["dlq_request_id"] == "r1"
    (reply,) = [CompletionReply.model_validate_json(r[1]) for r in publisher.on("replies")]
    assert reply.error is not None and reply.error.code == "internal_error"


async def test_record_without_key_replies_keyed_by_request_id() -> None:
    publisher = MemoryPublisher()
    handler = RequestHandler(SETTINGS, lambda: CATALOG, Answering(), publisher)
    await handler.handle(SourceRecord(topic="requests", partition=0, offset=0, value=orjson.dumps(REQUEST)))
    (_, _, key, _), = publisher.on("replies")
    assert key == b"r1"


async def test_disallowed_reply_to_goes_to_default_topic_without_dead_letter() -> None:
    publisher = MemoryPublisher()
    handler = RequestHandler(SETTINGS, lambda: CATALOG, Answering(), publisher)
    await handler.handle(record({**REQUEST, "reply_to": "billing.commands"}))
    assert [r[0] for r in publisher.records] == ["replies"]
    assert CompletionReply.model_validate_json(publisher.records[0][1]).error.code == "reply_topic_not_allowed"
