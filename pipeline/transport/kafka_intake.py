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
  prefix is committed and the rest is handed back (redelivered to the next owner);
- a record whose processing raises is retried with backoff: for ever while the failure is an
  outage (`is_outage`: broker or state store unreachable; the partition waits), at most
  `poison_max_attempts` times otherwise, then handed to `give_up` (dead letter) and finished;
- nothing ends the fetch loop but `stop()`: a record aiokafka cannot decode (a header key that
  is not UTF-8) is isolated, handed to `undecodable` and skipped; if the loop task dies anyway,
  `failure` is set so the process can report not-ready and exit non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from pipeline.transport.intake_state import IntakeState, Windows
from pipeline.transport.kafka_consumer import Batch, ConsumerLoop
from pipeline.transport.records import Partition, SourceRecord

log = logging.getLogger(__name__)

Process = Callable[[SourceRecord], Awaitable[None]]
GiveUp = Callable[[SourceRecord, BaseException, int], Awaitable[None]]
Undecodable = Callable[[str, int, int, BaseException], Awaitable[None]]  # topic, partition, offset, error


def _never_an_outage(_: BaseException) -> bool:
    return False


async def _log_give_up(record: SourceRecord, exc: BaseException, attempts: int) -> None:
    log.error("giving up on %s[%d]@%d after %d attempts: %r", record.topic, record.partition, record.offset,
              attempts, exc)


async def _log_undecodable(topic: str, partition: int, offset: int, exc: BaseException) -> None:
    log.error("skipping undecodable record %s[%d]@%d: %r", topic, partition, offset, exc)


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    max_in_flight: int = 256
    partition_window: int = 128
    commit_every: int = 100
    commit_interval_s: float = 1.0
    ordered_by_key: bool = False
    grace_s: float = 10.0
    retry_backoff_s: float = 1.0
    poison_max_attempts: int = 3
    #: At most this many records are stepped through one at a time to find an undecodable one.
    isolate_max_records: int = 10_000

    def windows(self) -> Windows:
        return Windows(self.max_in_flight, self.partition_window, self.ordered_by_key, self.commit_every,
                       self.commit_interval_s)


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """What the intake does with records it cannot finish (see the module docstring)."""

    is_outage: Callable[[BaseException], bool] = _never_an_outage
    give_up: GiveUp = _log_give_up
    undecodable: Undecodable = _log_undecodable


class ConcurrentIntake(ConsumerLoop):
    """Consumes one topic (or every topic `pattern` matches) in a consumer group and runs `process`
    for every record."""

    def __init__(
        self, consumer: AIOKafkaConsumer, topic: str, process: Process, limits: IntakeLimits,
        policy: FailurePolicy | None = None, *, pattern: str | None = None,
    ) -> None:
        super().__init__(consumer, topic, pattern=pattern)
        self._process = process
        self.limits = limits
        self.retry_backoff_s = limits.retry_backoff_s
        self.policy = policy or FailurePolicy()
        self.state: IntakeState[asyncio.Task[None]] = IntakeState(limits.windows(), now=time.monotonic())

    @property
    def in_flight(self) -> int:
        return self.state.in_flight

    # -- the loop's hooks ---------------------------------------------------------------
    def room(self) -> int:
        return self.state.free_slots()

    def before_fetch(self) -> None:
        change = self.state.pauses(self.assignment())
        self.pause(change.pause)
        self.resume(change.resume)

    async def handle(self, batch: Batch) -> None:
        self._dispatch_batch(batch)
        if self.state.commit_due(time.monotonic()):
            await self._commit()

    async def on_fetch_error(self, exc: Exception) -> None:
        """E.g. a record aiokafka cannot decode: find it, skip it, go on."""
        log.error("fetch raised %r; isolating the record that caused it", exc)
        try:
            await self._isolate()
        except Exception:
            log.exception("isolating failed; retrying")
            await asyncio.sleep(self.limits.retry_backoff_s)

    async def on_revoked(self, partitions: set[Partition]) -> None:
        await self._hand_back(partitions)

    async def on_stop(self) -> None:
        await self._hand_back(self.state.partitions())

    # -- dispatch -----------------------------------------------------------------------
    def _dispatch_batch(self, batch: Batch) -> None:
        for partition, records in batch.items():
            if not self.state.accepts(partition):
                continue  # being handed back: its records will be redelivered
            for record in records:
                self._dispatch(partition, record)

    def _dispatch(self, partition: Partition, record: SourceRecord) -> None:
        previous = self.state.waits_for(partition, record.key)
        task = asyncio.create_task(self._run_one(record, previous))
        self.state.started(partition, record.offset, record.key, task)
        task.add_done_callback(lambda t: self.state.finished(
            partition, record.offset, record.key, ok=not t.cancelled() and t.exception() is None))

    async def _isolate(self) -> None:
        """After a fetch raised: rewind every partition to the first record not dispatched (aiokafka
        drops the records it had decoded before the failure), fetch each apart, and step one record
        at a time through the partition that raises, so the bad record's offset is known exactly."""
        for partition in sorted(self.assignment() - self.state.paused, key=str):
            if not self.state.accepts(partition):
                continue
            await self._rewind(partition)
            try:
                self._dispatch_batch(await self.fetch(partition, max_records=max(1, self.state.free_slots())))
                continue
            except KafkaError:
                raise
            except Exception:
                await self._rewind(partition)
            await self._step_through(partition)

    async def _step_through(self, partition: Partition) -> None:
        for _ in range(self.limits.isolate_max_records):
            offset = self.state.next_offset(partition)
            assert offset is not None  # set by _rewind
            try:
                batch = await self.fetch(partition, max_records=1)
            except KafkaError:
                raise
            except Exception as exc:
                await self.policy.undecodable(partition.topic, partition.partition, offset, exc)
                self.state.skipped(partition, offset)
                self.seek(partition, offset + 1)
                return
            if not batch:
                return
            self._dispatch_batch(batch)

    async def _rewind(self, partition: Partition) -> None:
        offset = self.state.next_offset(partition)
        if offset is None:
            committed = await self.committed(partition)
            offset = await self.seek_to_beginning(partition) if committed is None else committed
            self.state.rewound(partition, offset)
        self.seek(partition, offset)

    # -- one record ---------------------------------------------------------------------
    async def _run_one(self, record: SourceRecord, previous: asyncio.Task[None] | None) -> None:
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
            except Exception as exc:  # process() handles bad input itself: an outage, or a bug
                attempt += 1
                outage = self.policy.is_outage(exc)
                if not outage and attempt >= self.limits.poison_max_attempts:
                    log.exception("processing %s[%d]@%d failed %d times; giving up on it",
                                  record.topic, record.partition, record.offset, attempt)
                    await self._give_up(record, exc, attempt)
                    return
                log.exception("processing %s[%d]@%d failed (attempt %d%s); retrying", record.topic,
                              record.partition, record.offset, attempt, ", an outage" if outage else "")
                await asyncio.sleep(self._backoff(attempt))

    def _backoff(self, attempt: int) -> float:
        return min(30.0, self.limits.retry_backoff_s * 2 ** min(attempt - 1, 5))

    async def _give_up(self, record: SourceRecord, exc: BaseException, attempts: int) -> None:
        """The policy's give_up (a dead letter); retried while it fails from an outage, else logged."""
        tries = 0
        while True:
            try:
                await self.policy.give_up(record, exc, attempts)
                return
            except Exception as failure:
                tries += 1
                if not self.policy.is_outage(failure):
                    log.exception("could not give up on %s[%d]@%d cleanly; skipping it", record.topic,
                                  record.partition, record.offset)
                    return
                await asyncio.sleep(self._backoff(tries))

    # -- commits and hand-back ----------------------------------------------------------
    async def _commit(self, only: set[Partition] | None = None) -> None:
        points = self.state.commit_points(time.monotonic(), only)
        if await self.commit(points):  # a failed commit (a rebalance): the revoke path commits again
            self.state.committed(points)

    async def _hand_back(self, partitions: set[Partition]) -> None:
        """Revoke or stop: grace period for in-flight work, commit the finished prefix, cancel the rest."""
        if not partitions:
            return
        running = self.state.hand_back(partitions)
        if running:
            await asyncio.wait(running, timeout=self.limits.grace_s)
        await self._commit(only=partitions)
        leftover = [t for t in self.state.running(partitions) if not t.done()]
        for task in leftover:
            task.cancel()
        if leftover:
            await asyncio.gather(*leftover, return_exceptions=True)
            log.warning("handed back %d unfinished records of %s", len(leftover), sorted(map(str, partitions)))
        self.state.handed_back(partitions)
