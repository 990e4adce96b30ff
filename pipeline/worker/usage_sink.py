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

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from pipeline import failpoints
from pipeline.contracts.models import UsageEvent
from pipeline.observability import metrics
from pipeline.transport.clickhouse import StoredUsage, UsageStore
from pipeline.transport.records import Publisher, SourceRecord, dead_letter_headers

log = logging.getLogger(__name__)


def dedup_token(topic: str, records: Sequence[SourceRecord]) -> str:
    """Deterministic for the same records: 'topic:p0=10-19,p3=4-7'."""
    ranges: dict[int, list[int]] = defaultdict(list)
    for r in records:
        ranges[r.partition].append(r.offset)
    parts = ",".join(f"p{p}={min(o)}-{max(o)}" for p, o in sorted(ranges.items()))
    return f"{topic}:{parts}"


class _Assignments(ConsumerRebalanceListener):
    def __init__(self, sink: UsageSink) -> None:
        self._sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._sink._flush_for_revoke(set(revoked))
        self._sink._checked -= set(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self._sink._lock:  # no flush while we learn what is already stored
            await self._sink._skip_stored(set(assigned))


class UsageSink:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
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
        self._consumer = consumer
        self._topic = topic
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
        self._checked: set[TopicPartition] = set()  # partitions whose stored offsets are known
        self._retry_at = 0.0
        self._backoff_s = backoff_initial_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._lock = asyncio.Lock()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        return self._consumer

    @property
    def outage(self) -> bool:
        """True while ClickHouse refuses inserts (the request path keeps serving meanwhile)."""
        return self._retry_at > 0

    async def start(self) -> None:
        self._consumer.subscribe([self._topic], listener=_Assignments(self))
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"usage-sink:{self._topic}")

    async def stop(self) -> None:
        """Flush what is buffered (if ClickHouse takes it), then leave; the rest is re-read later."""
        self._stopping = True
        if self._task is not None:
            await self._task
        async with self._lock:
            while (self._pending is not None or self._buffer) and await self._flush():
                pass
        await self._consumer.stop()

    async def _run(self) -> None:
        while not self._stopping:
            if self._consumer.assignment() - self._checked:
                await asyncio.sleep(0.05)  # no record is used before we know what is already stored
                continue
            room = self._batch_size - len(self._buffer)
            try:
                batch = await self._consumer.getmany(timeout_ms=100, max_records=max(1, room))
            except KafkaError:
                log.exception("usage fetch failed; retrying")
                await asyncio.sleep(1.0)
                continue
            for records in batch.values():
                for raw in records:
                    if raw.offset < self._stored_up_to.get(raw.partition, 0):
                        continue  # inserted before a crash, never committed: already counted
                    if not self._buffer:
                        self._buffer_since = time.monotonic()
                    self._buffer.append(SourceRecord(raw.topic, raw.partition, raw.offset, raw.value, raw.key))
            due = self._pending is not None or len(self._buffer) >= self._batch_size or (
                self._buffer and time.monotonic() - self._buffer_since >= self._flush_interval_s
            )
            if due and time.monotonic() >= self._retry_at:
                async with self._lock:
                    await self._flush()

    async def _flush(self) -> bool:
        """Insert one batch and commit its offsets; on failure pause and schedule a retry of the same batch."""
        if self._pending is None:
            if not self._buffer:
                return True
            self._buffer = [r for r in self._buffer if r.offset >= self._stored_up_to.get(r.partition, 0)]
            if not self._buffer:
                return True
            records, self._buffer = self._buffer[: self._batch_size], self._buffer[self._batch_size:]
            self._buffer_since = time.monotonic()
            self._pending = (records, await self._parse(records))
        records, rows = self._pending
        try:
            await self._store.insert(rows, dedup_token=dedup_token(self._topic, records))
        except Exception as exc:  # ClickHouse down, locked, refusing: keep everything, try later
            metrics.USAGE_INSERT_FAILURES.inc()
            self._pause_all()
            self._retry_at = time.monotonic() + self._backoff_s
            log.warning("usage insert of %d rows failed (%s); retrying in %.1fs", len(rows), exc, self._backoff_s)
            self._backoff_s = min(self._backoff_max_s, self._backoff_s * 2)
            return False
        failpoints.hit("sink_after_insert")
        await self._commit(records)
        self._pending = None
        metrics.USAGE_ROWS.inc(len(rows))
        if self._retry_at:
            log.info("ClickHouse is back: usage inserts resumed")
        self._retry_at, self._backoff_s = 0.0, self._backoff_initial_s
        self._resume_all()
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

    async def _commit(self, records: Sequence[SourceRecord]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, -1), r.offset + 1)
        try:
            await self._consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
        except KafkaError as exc:  # rebalancing: the rows are stored; the next owner skips them
            log.warning("usage offset commit failed (%s); stored offsets will be skipped on re-read", exc)

    def _pause_all(self) -> None:
        assigned = self._consumer.assignment()
        if assigned:
            self._consumer.pause(*assigned)

    def _resume_all(self) -> None:
        paused = self._consumer.paused()
        if paused:
            self._consumer.resume(*paused)

    async def _flush_for_revoke(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:
            while (self._pending is not None or self._buffer) and await self._flush():
                pass
            if self._pending is not None or self._buffer:
                # Not stored and not committed: the next owner reads these partitions again. The
                # failed batch is dropped whole, so its retry never mixes in other partitions' rows.
                self._pending = None
                self._buffer = [r for r in self._buffer if TopicPartition(r.topic, r.partition) not in revoked]

    async def _skip_stored(self, assigned: set[TopicPartition]) -> None:
        """Seek past offsets whose rows are already in ClickHouse (inserted, crash before commit)."""
        if not assigned:
            return
        try:
            stored = await self._store.query(
                f"SELECT kafka_partition, max(kafka_offset) FROM {self._store.database}.llm_usage "
                "WHERE kafka_topic = %(topic)s GROUP BY kafka_partition",
                {"topic": self._topic},
            )
        except Exception as exc:  # ClickHouse down: the dedup token and FINAL still hold
            log.warning("cannot read stored usage offsets (%s); relying on insert deduplication", exc)
            self._checked |= assigned
            return
        for partition, offset in stored:
            tp = TopicPartition(self._topic, int(partition))
            if tp in assigned:
                # Records below this are dropped as they arrive (a seek here can be overtaken by
                # the consumer's own position reset to the committed offset).
                self._stored_up_to[tp.partition] = int(offset) + 1
                log.info("usage %s: offsets below %d are already stored", tp, int(offset) + 1)
        self._checked |= assigned
