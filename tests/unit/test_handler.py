"""The handler's routing of outcomes to topics, with an in-memory Publisher (no broker needed)."""

import asyncio
import contextlib
from pathlib import Path

import orjson
import pytest

from pipeline.catalog import load_catalog
from pipeline.contracts.models import CompletionReply, UsageEvent
from pipeline.settings import Settings
from pipeline.state.processed import InProcessStore
from pipeline.transport.provider import MockCall, MockProvider, ProviderResponse
from pipeline.transport.records import MemoryPublisher, SourceRecord
from pipeline.worker.handler import RequestHandler
from pipeline.worker.outcome import StoredOutcome

CATALOG = load_catalog(Path(__file__).resolve().parents[2] / "config")
SETTINGS = Settings(topic_replies="replies", topic_usage="usage", topic_dlq="dlq")


def answering() -> MockProvider:
    return MockProvider(lambda call: ProviderResponse("fine", 5, 5))


def buggy() -> MockProvider:
    def fail(call: MockCall) -> ProviderResponse:
        raise ZeroDivisionError("a bug, not a provider error")

    return MockProvider(fail)


def record(doc: dict | bytes, key: bytes = b"k1") -> SourceRecord:
    value = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return SourceRecord(topic="requests", partition=2, offset=41, value=value, key=key)


REQUEST = {"request_id": "r1", "task_type": "summarize", "messages": [{"role": "user", "content": "x"}]}


async def test_success_publishes_usage_then_reply_with_key_and_correlation() -> None:
    publisher = MemoryPublisher()
    await RequestHandler(SETTINGS, lambda: CATALOG, answering(), publisher).handle(record(REQUEST))
    assert sorted(r[0] for r in publisher.records) == ["replies", "usage"]  # stored first, then both out
    (_, value, key, headers), = publisher.on("replies")
    assert key == b"k1" and headers["correlation_id"] == "r1"
    assert CompletionReply.model_validate_json(value).status == "ok"


async def test_unexpected_error_dead_letters_and_replies() -> None:
    publisher = MemoryPublisher()
    await RequestHandler(SETTINGS, lambda: CATALOG, buggy(), publisher).handle(record(REQUEST))
    (_, value, key, headers), = publisher.on("dlq")
    assert value == orjson.dumps(REQUEST) and key == b"k1"
    assert headers["dlq_reason"] == "internal_error" and "ZeroDivisionError" in headers["dlq_detail"]
    assert headers["dlq_source_partition"] == "2" and headers["dlq_source_offset"] == "41"
    assert headers["dlq_request_id"] == "r1"
    (reply,) = [CompletionReply.model_validate_json(r[1]) for r in publisher.on("replies")]
    assert reply.error is not None and reply.error.code == "internal_error"


async def test_record_without_key_replies_keyed_by_request_id() -> None:
    publisher = MemoryPublisher()
    handler = RequestHandler(SETTINGS, lambda: CATALOG, answering(), publisher)
    await handler.handle(SourceRecord(topic="requests", partition=0, offset=0, value=orjson.dumps(REQUEST)))
    (_, _, key, _), = publisher.on("replies")
    assert key == b"r1"


async def test_disallowed_reply_to_is_dead_lettered_and_answered_on_the_default_topic() -> None:
    publisher = MemoryPublisher()
    handler = RequestHandler(SETTINGS, lambda: CATALOG, answering(), publisher)
    await handler.handle(record({**REQUEST, "reply_to": "billing.commands"}))
    assert sorted(r[0] for r in publisher.records) == ["dlq", "replies"]  # nothing written to billing.commands
    (_, value, _, _), = publisher.on("replies")
    assert CompletionReply.model_validate_json(value).error.code == "reply_topic_not_allowed"
    (_, _, _, headers), = publisher.on("dlq")
    assert headers["dlq_reason"] == "reply_topic_not_allowed"


class FailingOncePublisher(MemoryPublisher):
    """Acknowledges nothing on `fail_topic` the first time: the worker 'dies' mid-publish."""

    def __init__(self, fail_topic: str) -> None:
        super().__init__()
        self.fail_topic = fail_topic

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str]) -> None:
        if topic == self.fail_topic:
            self.fail_topic = ""
            raise ConnectionError("broker went away")
        await super().publish(topic, value, key=key, headers=headers)


async def test_with_a_store_usage_and_reply_go_out_together_and_a_redelivery_replays_lost_usage() -> None:
    store = InProcessStore()
    publisher = FailingOncePublisher("usage")
    handler = RequestHandler(SETTINGS, lambda: CATALOG, answering(), publisher, processed=store)
    with pytest.raises(ConnectionError):
        await handler.handle(record(REQUEST))  # the reply went out, its usage event did not
    assert len(publisher.on("replies")) == 1 and publisher.on("usage") == []

    await handler.handle(record(REQUEST))  # the same record, delivered again
    (usage,) = [UsageEvent.model_validate_json(r[1]) for r in publisher.on("usage")]
    first, second = (r[1] for r in publisher.on("replies"))
    assert first == second  # the stored reply, byte for byte
    assert usage.request_id == "r1" and usage.status == "ok"

    retry = SourceRecord(topic="requests", partition=0, offset=99, value=orjson.dumps(REQUEST), key=b"k1")
    await handler.handle(retry)  # a client retry of the same request id: reply only, no double count
    assert len(publisher.on("usage")) == 1 and len(publisher.on("replies")) == 3


class CancellationSwallowingStore(InProcessStore):
    """A renew that eats the CancelledError landing mid-command, as redis-py can (redis/redis-py#2551)."""

    def __init__(self) -> None:
        super().__init__()
        self.renewing = asyncio.Event()
        self.renewals = 0

    async def renew(self, request_id: str, owner: str, lease_s: float) -> bool:
        self.renewals += 1
        if self.renewals == 1:  # only the first: a renewer that loops on must not hang the test's teardown
            self.renewing.set()
            with contextlib.suppress(asyncio.CancelledError):  # swallowed: the caller's cancel() never arrives
                await asyncio.sleep(30)
        return await super().renew(request_id, owner, lease_s)


def answers_while_renewing(store: CancellationSwallowingStore) -> MockProvider:
    async def answer(call: MockCall) -> ProviderResponse:
        await store.renewing.wait()  # the request ends while its lease renewal is in flight
        return ProviderResponse("fine", 5, 5)

    return MockProvider(answer)


async def test_the_lease_renewer_ends_with_its_request_even_if_the_store_swallows_cancellation() -> None:
    store = CancellationSwallowingStore()
    settings = SETTINGS.model_copy(update={"idempotency_lease_s": 0.03})
    publisher = MemoryPublisher()
    handler = RequestHandler(settings, lambda: CATALOG, answers_while_renewing(store), publisher, processed=store)
    await asyncio.wait_for(handler.handle(record(REQUEST)), 5)
    assert len(publisher.on("replies")) == 1
    await asyncio.sleep(0.1)  # several renewal periods
    renewers = [t for t in asyncio.all_tasks() if "_renew_lease" in repr(t.get_coro())]
    assert renewers == [] and store.renewals == 1


def test_stored_outcome_round_trip_and_bare_replies() -> None:
    outcome = StoredOutcome(b'{"reply":1}', (b'{"u":1}', b"\n\x00binary"), "requests/2/41")
    assert StoredOutcome.unpack(outcome.pack()) == outcome
    assert StoredOutcome.unpack(b'{"request_id":"r1"}') == StoredOutcome(b'{"request_id":"r1"}')
    with pytest.raises(ValueError, match="header accounts"):
        StoredOutcome.unpack(outcome.pack() + b"extra")


async def test_give_up_dead_letters_the_record_and_tells_the_caller() -> None:
    publisher = MemoryPublisher()
    handler = RequestHandler(SETTINGS, lambda: CATALOG, answering(), publisher)
    await handler.give_up(record(REQUEST), RecursionError("too deep"), 3)
    (_, value, _, headers), = publisher.on("dlq")
    assert value == orjson.dumps(REQUEST) and headers["dlq_reason"] == "internal_error"
    assert headers["dlq_attempts"] == "3" and "RecursionError: too deep" in headers["dlq_detail"]
    (reply,) = [CompletionReply.model_validate_json(r[1]) for r in publisher.on("replies")]
    assert reply.request_id == "r1" and reply.error.code == "internal_error"


async def test_give_up_on_unreadable_bytes_dead_letters_without_a_reply() -> None:
    publisher = MemoryPublisher()
    await RequestHandler(SETTINGS, lambda: CATALOG, answering(), publisher).give_up(record(b"\xff"), ValueError(), 3)
    assert [r[0] for r in publisher.records] == ["dlq"]


class ChunkRefusingPublisher(MemoryPublisher):
    """Fails every chunk event with an error that is not an outage (a bug in the path after the call)."""

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str]) -> None:
        if b'"type":"chunk"' in value:
            raise RuntimeError("chunk encoder bug")
        await super().publish(topic, value, key=key, headers=headers)


async def test_a_failure_after_the_provider_answered_is_dead_lettered_without_paying_again() -> None:
    provider = answering()
    publisher = ChunkRefusingPublisher()
    await RequestHandler(SETTINGS, lambda: CATALOG, provider, publisher).handle(record({**REQUEST, "stream": True}))
    assert len(provider.calls) == 1  # not poison_max_attempts calls: the answer was paid for once
    (_, _, _, headers), = publisher.on("dlq")
    assert headers["dlq_reason"] == "internal_error" and "chunk encoder bug" in headers["dlq_detail"]
    (usage,) = [UsageEvent.model_validate_json(r[1]) for r in publisher.on("usage")]  # the call is recorded
    assert usage.status == "ok"
    (reply,) = [CompletionReply.model_validate_json(r[1]) for r in publisher.on("replies")]
    assert reply.error is not None and reply.error.code == "internal_error"
