"""What consumer loops hand to the stages, and the one way the worker writes records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from pipeline.contracts.models import DeadLetterHeader


class Partition(NamedTuple):
    """One partition of one topic (equal to, and hashed like, aiokafka's TopicPartition)."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A consumed Kafka record, reduced to what the stages need."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    headers: dict[str, bytes] = field(default_factory=dict)
    timestamp_ms: int | None = None  # when it was published (CreateTime), for relative deadlines

    @property
    def source(self) -> Partition:
        return Partition(self.topic, self.partition)


class PublishRefused(Exception):
    """The record can never be written as it is: too large, an invalid or forbidden topic, a record
    the broker rejects. Retrying cannot help, so callers dead-letter or skip instead of holding the
    partition. Any other exception a `Publisher` raises is an outage (broker down, leader moving,
    timeouts) and is retried."""

    def __init__(self, topic: str, reason: str, detail: str) -> None:
        super().__init__(f"{topic!r} refused the record ({reason}): {detail}")
        self.topic = topic
        self.reason = reason  # too_large | invalid_topic | not_authorized | invalid_record
        self.detail = detail


class Publisher(Protocol):
    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str]) -> None:
        """Write one record and return once the broker acknowledged it; `PublishRefused` if it never can be."""
        ...


class MemoryPublisher:
    """The shipped test double of `Publisher`: keeps every record in order. Like a broker, it
    refuses records over `max_record_bytes` and every record to a topic in `refusing`."""

    def __init__(self, *, max_record_bytes: int | None = None, refusing: dict[str, str] | None = None) -> None:
        self.records: list[tuple[str, bytes, bytes | None, dict[str, str]]] = []
        self.max_record_bytes = max_record_bytes
        self.refusing = dict(refusing or {})  # topic -> refusal reason

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str]) -> None:
        if topic in self.refusing:
            raise PublishRefused(topic, self.refusing[topic], "refused by the test double")
        size = record_size(value, key, headers)
        if self.max_record_bytes is not None and size > self.max_record_bytes:
            raise PublishRefused(topic, "too_large", f"{size} bytes exceeds {self.max_record_bytes}")
        self.records.append((topic, value, key, dict(headers)))

    def on(self, topic: str) -> list[tuple[str, bytes, bytes | None, dict[str, str]]]:
        return [r for r in self.records if r[0] == topic]


def record_size(value: bytes | None, key: bytes | None, headers: dict[str, str]) -> int:
    """Bytes a record weighs against a producer's limit (value, key, headers, batch overhead)."""
    return (len(value or b"") + len(key or b"") + sum(len(k) + len(v.encode()) for k, v in headers.items())
            + 128)


def dead_letter_headers(
    record: SourceRecord, reason: str, detail: str, request_id: str | None = None
) -> dict[str, str]:
    """Headers of a dead-letter record: why, and exactly where the original came from."""
    headers = {
        DeadLetterHeader.REASON.value: reason,
        DeadLetterHeader.DETAIL.value: detail[:2000],
        DeadLetterHeader.SOURCE_TOPIC.value: record.topic,
        DeadLetterHeader.SOURCE_PARTITION.value: str(record.partition),
        DeadLetterHeader.SOURCE_OFFSET.value: str(record.offset),
        DeadLetterHeader.FAILED_AT.value: datetime.now(UTC).isoformat(),
    }
    if request_id is not None:
        headers[DeadLetterHeader.REQUEST_ID.value] = request_id
    return headers
