"""What consumer loops hand to the stages, and the one way the worker writes records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from pipeline.contracts import DeadLetterHeader


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


class Publisher(Protocol):
    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str]) -> None:
        """Write one record and return once the broker acknowledged it."""
        ...


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
