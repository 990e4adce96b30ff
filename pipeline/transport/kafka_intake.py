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

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from pipeline.transport.offsets import OffsetTracker
from pipeline.transport.records import SourceRecord

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


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """What the intake does with records it cannot finish (see the module docstring)."""

    is_outage: Callable[[BaseException], bool] = _never_an_outage
    give_up: GiveUp = _log_give_up
    undecodable: Undecodable = _log_undecodable


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, intake: ConcurrentIntake) -> None:
        self._intake = intake

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._intake._hand_back(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


class ConcurrentIntake:
    """Consumes one topic in a consumer group and runs `process` for every record."""

    def __init__(
        self, consumer: AIOKafkaConsumer, topic: str, process: Process, limits: IntakeLimits,
        policy: FailurePolicy | None = None,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._process = process
        self.limits = limits
        self.policy = policy or FailurePolicy()
        self._next_offset: dict[TopicPartition, int] = {}  # past the last record dispatched
        #: Set if the fetch loop ever ends other than by stop(); `failure` says how.
        self.failed = asyncio.Event()
        self.failure: BaseException | None = None
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
        self._loop_task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping:
            return
        exc = (asyncio.CancelledError() if task.cancelled() else task.exception()) or RuntimeError(
            "the intake loop returned")
        log.critical("the intake of %s stopped unexpectedly: %r", self._topic, exc)
        self.failure = exc
        self.failed.set()

    @property
    def healthy(self) -> bool:
        return not self.failed.is_set()

    async def stop(self) -> None:
        """Stop fetching, give in-flight work the grace period, commit, hand the rest back."""
        self._stopping = True
        if self._loop_task is not None:
            await asyncio.wait([self._loop_task])  # a loop that died was logged (and `failed`) already
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
            try:
                await self._poll_once()
            except KafkaError:
                log.exception("fetch failed; retrying")
                await asyncio.sleep(self.limits.retry_backoff_s)
            except Exception as exc:  # e.g. a record aiokafka cannot decode: find it, skip it, go on
                log.exception("fetch raised %s; isolating the record that caused it", type(exc).__name__)
                try:
                    await self._isolate()
                except Exception:
                    log.exception("isolating failed; retrying")
                    await asyncio.sleep(self.limits.retry_backoff_s)

    async def _poll_once(self) -> None:
        free = self.limits.max_in_flight - self.in_flight
        self._apply_pauses(global_full=free <= 0)
        batch = await self._consumer.getmany(timeout_ms=50, max_records=max(1, free))
        self._dispatch_batch(batch)
        await self._maybe_commit()

    def _dispatch_batch(self, batch: dict[TopicPartition, list[object]]) -> None:
        for tp, records in batch.items():
            if tp in self._closing:
                continue  # being handed back: its records will be redelivered
            for record in records:
                self._dispatch(tp, record)

    async def _isolate(self) -> None:
        """After a fetch raised: rewind every partition to the first record not dispatched (aiokafka
        drops the records it had decoded before the failure), fetch each apart, and step one record
        at a time through the partition that raises, so the bad record's offset is known exactly."""
        for tp in sorted(self._consumer.assignment() - self._paused - self._closing, key=str):
            await self._rewind(tp)
            try:
                free = self.limits.max_in_flight - self.in_flight
                self._dispatch_batch(await self._consumer.getmany(tp, timeout_ms=50, max_records=max(1, free)))
                continue
            except KafkaError:
                raise
            except Exception:
                await self._rewind(tp)
            for _ in range(self.limits.isolate_max_records):
                offset = self._next_offset[tp]
                try:
                    batch = await self._consumer.getmany(tp, timeout_ms=50, max_records=1)
                except KafkaError:
                    raise
                except Exception as exc:
                    await self.policy.undecodable(tp.topic, tp.partition, offset, exc)
                    self.tracker.start(tp, offset)
                    self.tracker.finish(tp, offset)
                    self._next_offset[tp] = offset + 1
                    self._consumer.seek(tp, offset + 1)
                    break
                if not batch:
                    break
                self._dispatch_batch(batch)

    async def _rewind(self, tp: TopicPartition) -> None:
        if tp not in self._next_offset:
            committed = await self._consumer.committed(tp)
            if committed is None:
                await self._consumer.seek_to_beginning(tp)
                self._next_offset[tp] = await self._consumer.position(tp)
                return
            self._next_offset[tp] = committed
        self._consumer.seek(tp, self._next_offset[tp])

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
        self._next_offset[tp] = record.offset + 1
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
            self._next_offset.pop(tp, None)
        self._paused -= tps
        self._closing -= tps
