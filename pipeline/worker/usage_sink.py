"""Usage sink: usage events from Kafka into ClickHouse, counted exactly once, never dropped.

- Batches flush at `batch_size` rows or `flush_interval_s`, as ONE synchronous insert; offsets
  are committed only after the insert succeeded.
- No double count, in three layers: every insert carries an `insert_deduplication_token` made of
  its topic/partition/offset ranges (a retried insert is dropped by ClickHouse); on assignment
  the sink seeks past offsets already stored (rows keep kafka_topic/partition/offset), so a crash
  between insert and commit re-reads nothing twice; and the table is a ReplacingMergeTree on
  event_id, read with FINAL where exactness matters.
- No loss: when ClickHouse is unreachable the sink pauses its partitions (polling goes on, so it
  keeps its group membership), keeps the batch, retries with exponential backoff, and catches up
  when ClickHouse returns. Only malformed events go to the usage dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence

from pydantic import ValidationError

from pipeline import failpoints
from pipeline.contracts.models import UsageEvent
from pipeline.observability import metrics
from pipeline.transport.clickhouse import StoredUsage, UsageStore
from pipeline.transport.kafka_consumer import Batch, ConsumerLoop, KafkaConsumer
from pipeline.transport.records import Partition, Publisher, SourceRecord, dead_letter_headers

log = logging.getLogger(__name__)


def dedup_token(topic: str, records: Sequence[SourceRecord]) -> str:
    """Deterministic for the same records: 'topic:p0=10-19,p3=4-7'."""
    ranges: dict[int, list[int]] = defaultdict(list)
    for r in records:
        ranges[r.partition].append(r.offset)
    parts = ",".join(f"p{p}={min(o)}-{max(o)}" for p, o in sorted(ranges.items()))
    return f"{topic}:{parts}"


class UsageSink(ConsumerLoop):
    fetch_timeout_ms = 100

    def __init__(
        self,
        consumer: KafkaConsumer,
        topic: str,
        store: UsageStore,
        publisher: Publisher,
        dead_letter_topic: str,
        *,
        batch_size: int = 5000,
        flush_interval_s: float = 2.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        super().__init__(consumer, topic)
        self._store = store
        self._publisher = publisher
        self._dlq = dead_letter_topic
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._buffer: list[SourceRecord] = []
        self._buffer_since = 0.0
        # The batch being inserted: a retry re-sends exactly these rows under the same token.
        self._pending: tuple[list[SourceRecord], list[StoredUsage]] | None = None
        self._stored_up_to: dict[int, int] = {}  # partition -> first offset not yet in ClickHouse
        self._checked: set[Partition] = set()  # partitions whose stored offsets are known
        self._retry_at = 0.0
        self._backoff_s = backoff_initial_s
        self._lock = asyncio.Lock()

    @property
    def outage(self) -> bool:
        """True while ClickHouse refuses inserts (the request path keeps serving meanwhile)."""
        return self._retry_at > 0

    # -- the loop's hooks ---------------------------------------------------------------
    def ready(self) -> bool:
        """No record is used before we know what is already stored."""
        return not self.assignment() - self._checked

    def room(self) -> int:
        return self._batch_size - len(self._buffer)

    async def handle(self, batch: Batch) -> None:
        for records in batch.values():
            for record in records:
                if record.offset < self._stored_up_to.get(record.partition, 0):
                    continue  # inserted before a crash, never committed: already counted
                if not self._buffer:
                    self._buffer_since = time.monotonic()
                self._buffer.append(record)
        due = self._pending is not None or len(self._buffer) >= self._batch_size or (
            self._buffer and time.monotonic() - self._buffer_since >= self._flush_interval_s
        )
        if due and time.monotonic() >= self._retry_at:
            async with self._lock:
                await self._flush()

    async def on_assigned(self, partitions: set[Partition]) -> None:
        async with self._lock:  # no flush while we learn what is already stored
            await self._skip_stored(partitions)

    async def on_revoked(self, partitions: set[Partition]) -> None:
        async with self._lock:
            await self._flush_all()
            if self._pending is not None or self._buffer:
                # Not stored and not committed: the next owner reads these partitions again. The
                # failed batch is dropped whole, so its retry never mixes in other partitions' rows.
                self._pending = None
                self._buffer = [r for r in self._buffer if r.source not in partitions]
        self._checked -= partitions

    async def on_stop(self) -> None:
        """Flush what is buffered (if ClickHouse takes it), then leave; the rest is re-read later."""
        async with self._lock:
            await self._flush_all()

    # -- flushing -----------------------------------------------------------------------
    async def _flush_all(self) -> None:
        while (self._pending is not None or self._buffer) and await self._flush():
            pass

    async def _flush(self) -> bool:
        """Insert one batch and commit its offsets; on failure pause and schedule a retry of the same batch."""
        if self._pending is None:
            self._buffer = [r for r in self._buffer if r.offset >= self._stored_up_to.get(r.partition, 0)]
            if not self._buffer:
                return True
            records = self._buffer[: self._batch_size]
            rows = await self._parse(records)  # raises if a dead letter cannot be written: nothing taken yet
            self._buffer = self._buffer[self._batch_size:]
            self._buffer_since = time.monotonic()
            self._pending = (records, rows)
        records, rows = self._pending
        try:
            await self._store.insert(rows, dedup_token=dedup_token(self.topic, records))
        except Exception as exc:  # ClickHouse down, locked, refusing: keep everything, try later
            metrics.USAGE_INSERT_FAILURES.inc()
            self.pause_all()
            self._retry_at = time.monotonic() + self._backoff_s
            log.warning("usage insert of %d rows failed (%s); retrying in %.1fs", len(rows), exc, self._backoff_s)
            self._backoff_s = min(self._backoff_max_s, self._backoff_s * 2)
            return False
        failpoints.hit("sink_after_insert")
        if not await self.commit(_next_offsets(records)):
            log.warning("usage offsets not committed; stored offsets will be skipped on re-read")
        self._pending = None
        metrics.USAGE_ROWS.inc(len(rows))
        if self._retry_at:
            log.info("ClickHouse is back: usage inserts resumed")
        self._retry_at, self._backoff_s = 0.0, self._backoff_initial_s
        self.resume_all()
        return True

    async def _parse(self, records: Sequence[SourceRecord]) -> list[StoredUsage]:
        rows = []
        for record in records:
            try:
                event = UsageEvent.model_validate_json(record.value or b"")
            except ValidationError as exc:
                log.warning("malformed usage event at %s[%d]@%d", record.topic, record.partition, record.offset)
                await self._publisher.publish(self._dlq, record.value or b"", key=record.key,
                                              headers=dead_letter_headers(record, "schema_invalid", str(exc)))
                metrics.DEAD_LETTERS.labels(self._dlq, "schema_invalid").inc()
                continue
            rows.append(StoredUsage(event, record.partition, record.offset, record.topic))
        return rows

    async def _skip_stored(self, assigned: set[Partition]) -> None:
        """Learn which offsets already have their rows in ClickHouse (inserted, crash before commit)."""
        if not assigned:
            return
        try:
            stored = await self._store.stored_offsets(self.topic)
        except Exception as exc:  # ClickHouse down: the dedup token and FINAL still hold
            log.warning("cannot read stored usage offsets (%s); relying on insert deduplication", exc)
            self._checked |= assigned
            return
        for partition, offset in stored.items():
            if Partition(self.topic, partition) in assigned:
                # Records below this are dropped as they arrive (a seek here can be overtaken by
                # the consumer's own position reset to the committed offset).
                self._stored_up_to[partition] = offset + 1
                log.info("usage %s[%d]: offsets below %d are already stored", self.topic, partition, offset + 1)
        self._checked |= assigned


def _next_offsets(records: Sequence[SourceRecord]) -> dict[Partition, int]:
    """The commit that covers `records`: per partition, one past the highest offset."""
    offsets: dict[Partition, int] = {}
    for r in records:
        offsets[r.source] = max(offsets.get(r.source, -1), r.offset + 1)
    return offsets
