"""Outputs never hold a partition: replies fit the record limit, refusals dead-letter or skip."""

from __future__ import annotations

import orjson

from pipeline.contracts.models import CompletionReply, ErrorCode, ReplyStatus
from pipeline.settings import Settings
from pipeline.transport.records import MemoryPublisher, SourceRecord
from pipeline.worker.outputs import HEADER_ALLOWANCE, Outputs

LIMIT = 64 * 1024
SETTINGS = Settings(topic_replies="replies", topic_usage="usage", topic_dlq="dlq", max_message_bytes=16 * 1024,
                    kafka_max_record_bytes=LIMIT)
RECORD = SourceRecord(topic="requests", partition=1, offset=7, value=b'{"request_id": "r1"}', key=b"k")


def reply(**fields) -> CompletionReply:
    return CompletionReply(request_id="r1", status=ReplyStatus.OK, content="answer", **fields)


def test_a_reply_that_fits_is_unchanged() -> None:
    out = Outputs(SETTINGS, MemoryPublisher())
    small = reply(metadata={"trace": "t-1"})
    assert out.encode_reply(small) == small.model_dump_json().encode()


def test_an_oversized_metadata_echo_is_dropped_with_a_flag() -> None:
    out = Outputs(SETTINGS, MemoryPublisher())
    value = out.encode_reply(reply(metadata={"pad": "p" * LIMIT}))
    decoded = CompletionReply.model_validate_json(value)
    assert len(value) <= LIMIT - HEADER_ALLOWANCE
    assert decoded.status == "ok" and decoded.content == "answer"
    assert decoded.metadata == {} and decoded.metadata_truncated


def test_a_reply_too_large_even_without_metadata_becomes_an_error_reply() -> None:
    out = Outputs(SETTINGS, MemoryPublisher())
    decoded = CompletionReply.model_validate_json(out.encode_reply(reply(embeddings=[[0.5] * 20_000])))
    assert decoded.status == "error" and decoded.error.code == ErrorCode.TOO_LARGE
    assert decoded.embeddings is None and "exceeds the limit" in decoded.error.message


def test_a_reply_that_cannot_be_serialized_becomes_an_error_reply() -> None:
    out = Outputs(SETTINGS, MemoryPublisher())
    deep: dict = {}
    node = deep
    for _ in range(400):  # deeper than the serializer's recursion limit
        node["n"] = {}
        node = node["n"]
    decoded = CompletionReply.model_validate_json(out.encode_reply(reply(metadata=deep)))
    assert decoded.status == "error" and decoded.error.code == ErrorCode.INTERNAL_ERROR
    assert decoded.metadata == {} and decoded.metadata_truncated


async def test_a_refused_reply_dead_letters_the_request() -> None:
    publisher = MemoryPublisher(refusing={"team.replies": "not_authorized"})
    await Outputs(SETTINGS, publisher).reply(RECORD, "team.replies", "r1", b"{}")
    (_, value, key, headers), = publisher.on("dlq")
    assert value == RECORD.value and key == b"k"
    assert headers["dlq_reason"] == "reply_undeliverable" and "not_authorized" in headers["dlq_detail"]
    assert headers["dlq_request_id"] == "r1" and headers["dlq_source_offset"] == "7"


async def test_a_dead_letter_over_the_limit_goes_without_its_bytes() -> None:
    publisher = MemoryPublisher()
    big = SourceRecord(topic="requests", partition=0, offset=3, value=b"x" * (LIMIT + 1))
    await Outputs(SETTINGS, publisher).dead_letter(big, ErrorCode.TOO_LARGE, "too big", None)
    (_, value, _, headers), = publisher.on("dlq")
    assert value == b"" and headers["dlq_value_omitted"].startswith(f"{LIMIT + 1} bytes")


async def test_a_dead_letter_the_dlq_refuses_is_retried_without_its_bytes() -> None:
    publisher = MemoryPublisher(max_record_bytes=2000)
    doc = SourceRecord(topic="requests", partition=0, offset=3, value=orjson.dumps({"pad": "p" * 5000}))
    await Outputs(SETTINGS, publisher).dead_letter(doc, ErrorCode.SCHEMA_INVALID, "bad", None)
    (_, value, _, headers), = publisher.on("dlq")
    assert value == b"" and headers["dlq_value_omitted"].endswith("too_large")


async def test_what_even_the_dlq_refuses_is_skipped_not_raised() -> None:
    publisher = MemoryPublisher(refusing={"dlq": "invalid_topic"})
    await Outputs(SETTINGS, publisher).dead_letter(RECORD, ErrorCode.INVALID_JSON, "bad", None)
    assert publisher.records == []


async def test_a_refused_usage_event_is_counted_not_raised() -> None:
    publisher = MemoryPublisher(refusing={"usage": "not_authorized"})
    await Outputs(SETTINGS, publisher).usage("r1", [b"{}"])
    assert publisher.records == []
