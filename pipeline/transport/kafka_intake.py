"""Kafka intake for slow work: many records in flight, commits that never pass unfinished ones.

FastStream's `msg.ack()` commits every assigned partition's consumed position (past records
still in flight), and its `max_workers` modes are either at-most-once or one record at a time
per partition. LLM calls take seconds, so this loop drives aiokafka directly:

- records are dispatched as tasks, bounded globally (`max_in_flight`) and per partition
  (`partition_window`); a full partition is *paused* while polling continues, so the consumer
  keeps heartbeating and is never evicted for exceeding `max_poll_interval_ms`;
- per partition, only the contiguous prefix of finished offsets is committed (`OffsetTracker`),
  every `commit_every` completions or `commit_interval_s` seconds;
- optionally, records with the same key are processed in order;
- on revoke and on stop: dispatch stops, in-flight work gets a bounded grace period, the finished
  prefix is committed and the rest is handed back (redelivered to the next owner).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from pipeline.worker.offsets import OffsetTracker
from pipeline.worker.records import SourceRecord

log = logging.getLogger(__name__)

Process = Callable[[SourceRecord], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    max_in_flight: int = 256
    partition_window: int = 128
    commit_every: int = 100
    commit_interval_s: float = 1.0
    ordered_by_key: bool = False
    grace_s: float = 10.0
    retry_backoff_s: float = 1.0


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, intake: ConcurrentIntake) -> None:
        self._intake = intake

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._intake._hand_back(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


class ConcurrentIntake:
    """Consumes one topic in a consumer group and runs `process` for every record."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str, process: Process, limits: IntakeLimits) -> None:
        self._consumer = consumer
        self._topic = topic
        self._process = process
        self.limits = limits
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._tasks: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self._key_tails: dict[tuple[TopicPartition, bytes], asyncio.Task[None]] = {}
        self._paused: set[TopicPartition] = set()
        self._closing: set[TopicPartition] = set()
        self._completions_since_commit = 0
        self._last_commit = time.monotonic()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._consumer.subscribe([self._topic], listener=_Rebalance(self))
        await self._consumer.start()
        self._loop_task = asyncio.create_task(self._run(), name=f"intake:{self._topic}")

    async def stop(self) -> None:
        """Stop fetching, give in-flight work the grace period, commit, hand the rest back."""
        self._stopping = True
        if self._loop_task is not None:
            await self._loop_task
        await self._hand_back(set(self._tasks) | set(self.tracker.partitions()))
        await self._consumer.stop()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        return self._consumer

    @property
    def in_flight(self) -> int:
        return sum(len(t) for t in self._tasks.values())

    # -- the loop -----------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping:
            free = self.limits.max_in_flight - self.in_flight
            self._apply_pauses(global_full=free <= 0)
            try:
                batch = await self._consumer.getmany(timeout_ms=50, max_records=max(1, free))
            except KafkaError:
                log.exception("fetch failed; retrying")
                await asyncio.sleep(self.limits.retry_backoff_s)
                continue
            for tp, records in batch.items():
                if tp in self._closing:
                    continue  # being handed back: its records will be redelivered
                for record in records:
                    self._dispatch(tp, record)
            await self._maybe_commit()

    def _apply_pauses(self, *, global_full: bool) -> None:
        assigned = self._consumer.assignment()
        want = {tp for tp in assigned if global_full or len(self._tasks.get(tp, ())) >= self.limits.partition_window}
        if want - self._paused:
            self._consumer.pause(*(want - self._paused))
        if (self._paused - want) & assigned:
            self._consumer.resume(*((self._paused - want) & assigned))
        self._paused = want

    def _dispatch(self, tp: TopicPartition, raw: object) -> None:
        record = SourceRecord(
            topic=raw.topic, partition=raw.partition, offset=raw.offset,  # type: ignore[attr-defined]
            value=raw.value, key=raw.key,  # type: ignore[attr-defined]
            headers=dict(raw.headers or ()),  # type: ignore[attr-defined]
            timestamp_ms=raw.timestamp,  # type: ignore[attr-defined]
        )
        self.tracker.start(tp, record.offset)
        previous = None
        if self.limits.ordered_by_key and record.key is not None:
            previous = self._key_tails.get((tp, record.key))
        task = asyncio.create_task(self._run_one(tp, record, previous))
        self._tasks.setdefault(tp, set()).add(task)
        if self.limits.ordered_by_key and record.key is not None:
            self._key_tails[(tp, record.key)] = task
        task.add_done_callback(lambda t: self._done(tp, record, t))

    async def _run_one(self, tp: TopicPartition, record: SourceRecord, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            with contextlib.suppress(BaseException):
                await asyncio.shield(previous)
        attempt = 0
        while True:
            try:
                await self._process(record)
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # process() handles bad input itself; this is an outage of our outputs
                attempt += 1
                log.exception("processing %s[%d]@%d failed (attempt %d); retrying",
                              record.topic, record.partition, record.offset, attempt)
                await asyncio.sleep(min(30.0, self.limits.retry_backoff_s * 2 ** min(attempt, 5)))

    def _done(self, tp: TopicPartition, record: SourceRecord, task: asyncio.Task[None]) -> None:
        self._tasks.get(tp, set()).discard(task)
        if record.key is not None and self._key_tails.get((tp, record.key)) is task:
            del self._key_tails[(tp, record.key)]
        if not task.cancelled() and task.exception() is None:
            self.tracker.finish(tp, record.offset)
            self._completions_since_commit += 1

    # -- commits and hand-back ----------------------------------------------------------
    async def _maybe_commit(self) -> None:
        due = (
            self._completions_since_commit >= self.limits.commit_every
            or time.monotonic() - self._last_commit >= self.limits.commit_interval_s
        )
        if due:
            await self._commit()

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        points = self.tracker.commit_points(only)
        self._last_commit = time.monotonic()
        self._completions_since_commit = 0
        if not points:
            return
        try:
            await self._consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in points.items()})
        except KafkaError as exc:  # e.g. a rebalance in progress: the revoke path commits again
            log.warning("commit of %s failed: %s", points, exc)
            return
        self.tracker.mark_committed(points)

    async def _hand_back(self, tps: set[TopicPartition]) -> None:
        """Revoke or stop: grace period for in-flight work, commit the finished prefix, cancel the rest."""
        if not tps:
            return
        self._closing |= tps
        running = [t for tp in tps for t in self._tasks.get(tp, ())]
        if running:
            await asyncio.wait(running, timeout=self.limits.grace_s)
        await self._commit(only=tps)
        leftover = [t for tp in tps for t in self._tasks.get(tp, ()) if not t.done()]
        for task in leftover:
            task.cancel()
        if leftover:
            await asyncio.gather(*leftover, return_exceptions=True)
            log.warning("handed back %d unfinished records of %s", len(leftover), sorted(map(str, tps)))
        self.tracker.forget(tps)
        for tp in tps:
            self._tasks.pop(tp, None)
        self._paused -= tps
        self._closing -= tps
