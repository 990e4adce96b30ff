"""Usage sink: usage events from Kafka into ClickHouse, in batches, commit after insert.

A batch is inserted with one synchronous insert; its offsets are committed only after the
insert succeeded, so a crash re-reads (never loses) events, and the table's ReplacingMergeTree
on `event_id` absorbs the re-read. A malformed event goes to the usage dead-letter topic.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import ValidationError

from pipeline.contracts import UsageEvent
from pipeline.transport.clickhouse import StoredUsage, UsageStore
from pipeline.worker.records import Publisher, SourceRecord, dead_letter_headers

log = logging.getLogger(__name__)


class UsageSink:
    def __init__(self, store: UsageStore, publisher: Publisher, dead_letter_topic: str) -> None:
        self._store = store
        self._publisher = publisher
        self._dlq = dead_letter_topic

    async def write_batch(self, records: Sequence[SourceRecord]) -> int:
        """Insert every well-formed event of the batch; raises if the insert fails (nothing committed)."""
        rows: list[StoredUsage] = []
        for record in records:
            try:
                event = UsageEvent.model_validate_json(record.value or b"")
            except ValidationError as exc:
                log.warning("malformed usage event at %s[%d]@%d", record.topic, record.partition, record.offset)
                await self._publisher.publish(
                    self._dlq,
                    record.value or b"",
                    key=record.key,
                    headers=dead_letter_headers(record, "schema_invalid", str(exc)),
                )
                continue
            rows.append(StoredUsage(event, record.partition, record.offset))
        await self._store.insert(rows)
        return len(rows)
