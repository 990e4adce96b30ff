"""One Kafka consumer loop: lifecycle, fetch loop, error backoff, commits, rebalance hooks.

The request intake, the usage sink and the client's reply reader each subclass `ConsumerLoop`
and say only what differs (FastStream's shape: one broker, small subscribers per mode):

- `join()`: subscribe with a group (default; rebalances call `on_assigned` / `on_revoked`), or
  assign partitions directly (the reply reader);
- `room()` and `before_fetch()`: how many records to fetch, what to pause first;
- `handle(batch)`: what to do with the records, as vendor-free `SourceRecord`s;
- `on_fetch_error(exc)`: a fetch that raised something other than a Kafka error (a record
  aiokafka cannot decode);
- `on_stop()`: what to finish before the consumer leaves (commit, flush, hand back).

A Kafka error backs off and retries; nothing ends the loop but `stop()`. If it ends anyway
(a bug), `failed` is set with the cause so the process can report not-ready and exit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from pipeline.transport.records import Partition, SourceRecord

log = logging.getLogger(__name__)

Batch = dict[Partition, list[SourceRecord]]
#: What `ConsumerLoop` drives (`pipeline.transport.kafka.build_consumer` makes one from settings).
KafkaConsumer: TypeAlias = AIOKafkaConsumer


def _tps(partitions: Iterable[Partition]) -> list[TopicPartition]:
    return [TopicPartition(p.topic, p.partition) for p in partitions]


def _partitions(tps: Iterable[TopicPartition]) -> set[Partition]:
    return {Partition(tp.topic, tp.partition) for tp in tps}


def to_source_record(raw: object) -> SourceRecord:
    return SourceRecord(
        topic=raw.topic, partition=raw.partition, offset=raw.offset,  # type: ignore[attr-defined]
        value=raw.value, key=raw.key,  # type: ignore[attr-defined]
        headers=dict(raw.headers or ()),  # type: ignore[attr-defined]
        timestamp_ms=raw.timestamp,  # type: ignore[attr-defined]
    )


class _Hooks(ConsumerRebalanceListener):
    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._loop.on_revoked(_partitions(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._loop.on_assigned(_partitions(assigned))


class ConsumerLoop:
    """Drives one aiokafka consumer on one topic; subclasses decide what a batch means."""

    fetch_timeout_ms = 50
    retry_backoff_s = 1.0

    def __init__(self, consumer: KafkaConsumer, topic: str, *, pattern: str | None = None) -> None:
        self._consumer = consumer
        self.topic = topic
        #: A regular expression: subscribe to every topic it matches (from the start of the name),
        #: those created later included, found at the consumer's metadata refresh; `topic` then
        #: only names the loop in logs.
        self.pattern = pattern
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        await self._consumer.start()
        try:
            await self.join()
        except BaseException:
            await self._consumer.stop()
            raise
        self._loop_task = asyncio.create_task(self._run(), name=f"{type(self).__name__}:{self.topic}")
        self._loop_task.add_done_callback(self._loop_ended)

    async def stop(self) -> None:
        """Stop fetching, let the subclass finish (`on_stop`), then leave the group."""
        self._stopping = True
        if self._loop_task is not None:
            await asyncio.wait([self._loop_task])  # a loop that died was logged (and `failed`) already
        try:
            await self.on_stop()
        finally:
            await self._consumer.stop()

    @property
    def healthy(self) -> bool:
        return not self.failed.is_set()

    @property
    def consumer(self) -> KafkaConsumer:
        return self._consumer

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping:
            return
        exc = (asyncio.CancelledError() if task.cancelled() else task.exception()) or RuntimeError(
            "the consumer loop returned")
        log.critical("the consumer of %s stopped unexpectedly: %r", self.topic, exc)
        self.failure = exc
        self.failed.set()

    # -- what subclasses say ------------------------------------------------------------
    async def join(self) -> None:
        """Subscribe in the consumer's group; rebalances call `on_assigned` and `on_revoked`."""
        if self.pattern is not None:
            self._consumer.subscribe(pattern=self.pattern, listener=_Hooks(self))
        else:
            self._consumer.subscribe([self.topic], listener=_Hooks(self))

    async def on_assigned(self, partitions: set[Partition]) -> None:
        log.info("assigned %s", sorted(map(str, partitions)))

    async def on_revoked(self, partitions: set[Partition]) -> None:
        """Called before the partitions go to another consumer: commit what is done here."""

    async def on_stop(self) -> None:
        """Called once the loop ended, before the consumer leaves."""

    def ready(self) -> bool:
        """False holds fetching (the loop idles) until the subclass can use records."""
        return True

    def room(self) -> int:
        return 500

    def before_fetch(self) -> None:
        """Pause or resume partitions before each fetch."""

    async def handle(self, batch: Batch) -> None:
        raise NotImplementedError

    async def on_fetch_error(self, exc: Exception) -> None:
        log.error("fetch of %s raised %r; retrying", self.topic, exc)
        await asyncio.sleep(self.retry_backoff_s)

    # -- the loop -----------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping:
            if not self.ready():
                await asyncio.sleep(0.05)
                continue
            try:
                self.before_fetch()
                batch = await self.fetch(max_records=max(1, self.room()))
            except KafkaError:
                log.exception("fetch of %s failed; retrying", self.topic)
                await asyncio.sleep(self.retry_backoff_s)
                continue
            except Exception as exc:
                await self.on_fetch_error(exc)
                continue
            try:
                await self.handle(batch)
            except Exception:  # a subclass's failure must not end the loop: back off, go on
                log.exception("handling records of %s failed; retrying", self.topic)
                await asyncio.sleep(self.retry_backoff_s)

    # -- tools for subclasses -----------------------------------------------------------
    async def fetch(self, *partitions: Partition, max_records: int, timeout_ms: int | None = None) -> Batch:
        raw = await self._consumer.getmany(*_tps(partitions), timeout_ms=timeout_ms or self.fetch_timeout_ms,
                                           max_records=max_records)
        return {Partition(tp.topic, tp.partition): [to_source_record(r) for r in records]
                for tp, records in raw.items()}

    def assignment(self) -> set[Partition]:
        return _partitions(self._consumer.assignment())

    def pause(self, partitions: Iterable[Partition]) -> None:
        tps = _tps(partitions)
        if tps:
            self._consumer.pause(*tps)

    def resume(self, partitions: Iterable[Partition]) -> None:
        tps = _tps(partitions)
        if tps:
            self._consumer.resume(*tps)

    def pause_all(self) -> None:
        self.pause(self.assignment())

    def resume_all(self) -> None:
        self.resume(_partitions(self._consumer.paused()))

    async def commit(self, points: dict[Partition, int]) -> bool:
        """Commit `{partition: next offset to read}`; False if Kafka refused (e.g. mid-rebalance)."""
        if not points:
            return True
        try:
            await self._consumer.commit({TopicPartition(p.topic, p.partition): OffsetAndMetadata(o, "")
                                         for p, o in points.items()})
        except KafkaError as exc:
            log.warning("commit of %s failed: %s", {str(p): o for p, o in points.items()}, exc)
            return False
        return True

    def seek(self, partition: Partition, offset: int) -> None:
        self._consumer.seek(TopicPartition(partition.topic, partition.partition), offset)

    async def committed(self, partition: Partition) -> int | None:
        return await self._consumer.committed(TopicPartition(partition.topic, partition.partition))

    async def seek_to_beginning(self, partition: Partition) -> int:
        """Seek to the first offset still in the log, and return it."""
        tp = TopicPartition(partition.topic, partition.partition)
        await self._consumer.seek_to_beginning(tp)
        return await self._consumer.position(tp)
