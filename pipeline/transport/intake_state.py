"""What the request intake knows about its partitions, without I/O (like aiokafka's SubscriptionState).

The intake's loop only drives Kafka; every decision about which records are in flight lives
here, so it is unit-tested without a broker:

- which records each partition has in flight, and so which partitions to pause (a full
  partition window, or the global `max_in_flight`) and which to resume;
- per key, the record a new one must wait for when records of one key run in order;
- which partitions are being handed back (their newly fetched records are dropped: the next
  owner reads them again), and the bookkeeping forgotten once they are gone;
- the commit points (`OffsetTracker`) and when a commit is due.

`H` is whatever the loop uses to run one record (an asyncio task); the state never looks inside.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pipeline.transport.offsets import OffsetTracker
from pipeline.transport.records import Partition

H = TypeVar("H")


@dataclass(frozen=True, slots=True)
class Windows:
    """How much work may be in flight, and how often the finished prefix is committed."""

    max_in_flight: int = 256
    partition_window: int = 128
    ordered_by_key: bool = False
    commit_every: int = 100
    commit_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class PauseChange:
    pause: frozenset[Partition]
    resume: frozenset[Partition]


class IntakeState(Generic[H]):
    def __init__(self, windows: Windows, *, now: float = 0.0) -> None:
        self.windows = windows
        self.offsets: OffsetTracker[Partition] = OffsetTracker()
        self._running: dict[Partition, dict[int, H]] = {}  # partition -> offset -> handle
        self._key_tails: dict[tuple[Partition, bytes], tuple[int, H]] = {}
        self._next_offset: dict[Partition, int] = {}  # past the last record dispatched
        self.paused: frozenset[Partition] = frozenset()
        self._closing: set[Partition] = set()
        self._completions_since_commit = 0
        self._last_commit = now

    # -- in flight ----------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return sum(len(r) for r in self._running.values())

    def free_slots(self) -> int:
        return self.windows.max_in_flight - self.in_flight

    def running(self, partitions: Iterable[Partition] | None = None) -> list[H]:
        parts = self._running if partitions is None else partitions
        return [h for p in parts for h in self._running.get(p, {}).values()]

    def partitions(self) -> set[Partition]:
        """Every partition the state holds anything for (what a stop must hand back)."""
        return set(self._running) | set(self.offsets.partitions())

    def accepts(self, partition: Partition) -> bool:
        """False while a partition is handed back: its fetched records are left for the next owner."""
        return partition not in self._closing

    def waits_for(self, partition: Partition, key: bytes | None) -> H | None:
        """The record a new record of `key` must wait for (ordered by key), or None."""
        if not self.windows.ordered_by_key or key is None:
            return None
        tail = self._key_tails.get((partition, key))
        return None if tail is None else tail[1]

    def started(self, partition: Partition, offset: int, key: bytes | None, handle: H) -> None:
        self.offsets.start(partition, offset)
        self._next_offset[partition] = offset + 1
        self._running.setdefault(partition, {})[offset] = handle
        if self.windows.ordered_by_key and key is not None:
            self._key_tails[(partition, key)] = (offset, handle)

    def finished(self, partition: Partition, offset: int, key: bytes | None, *, ok: bool) -> None:
        """`ok` False (cancelled by a hand-back): not committed, so the next owner runs it again."""
        self._running.get(partition, {}).pop(offset, None)
        if key is not None and self._key_tails.get((partition, key), (None,))[0] == offset:
            del self._key_tails[(partition, key)]
        if ok:
            self.offsets.finish(partition, offset)
            self._completions_since_commit += 1

    def skipped(self, partition: Partition, offset: int) -> None:
        """A record that can never be processed (undecodable) counts as finished."""
        self.offsets.start(partition, offset)
        self.offsets.finish(partition, offset)
        self._next_offset[partition] = offset + 1

    def next_offset(self, partition: Partition) -> int | None:
        """The first offset not dispatched yet, if anything was dispatched since assignment."""
        return self._next_offset.get(partition)

    def rewound(self, partition: Partition, offset: int) -> None:
        self._next_offset[partition] = offset

    # -- pausing ------------------------------------------------------------------------
    def pauses(self, assigned: Iterable[Partition]) -> PauseChange:
        """Pause every full partition (all of them when the global limit is reached); resume the rest."""
        assigned = set(assigned)
        full = self.free_slots() <= 0
        want = frozenset(p for p in assigned
                         if full or len(self._running.get(p, ())) >= self.windows.partition_window)
        change = PauseChange(want - self.paused, (self.paused - want) & assigned)
        self.paused = want
        return change

    # -- commits ------------------------------------------------------------------------
    def commit_due(self, now: float) -> bool:
        return (self._completions_since_commit >= self.windows.commit_every
                or now - self._last_commit >= self.windows.commit_interval_s)

    def commit_points(self, now: float, only: Iterable[Partition] | None = None) -> dict[Partition, int]:
        """What to commit now (restarts the commit clock); report success with `committed`."""
        self._last_commit = now
        self._completions_since_commit = 0
        return self.offsets.commit_points(only)

    def committed(self, points: dict[Partition, int]) -> None:
        self.offsets.mark_committed(points)

    # -- hand-back ----------------------------------------------------------------------
    def hand_back(self, partitions: Iterable[Partition]) -> list[H]:
        """Start handing partitions back: nothing new is dispatched on them; returns their running work."""
        parts = set(partitions)
        self._closing |= parts
        return self.running(parts)

    def handed_back(self, partitions: Iterable[Partition]) -> None:
        """Forget partitions another consumer now owns (their unfinished records are redelivered there)."""
        parts = set(partitions)
        self.offsets.forget(parts)
        for p in parts:
            self._running.pop(p, None)
            self._next_offset.pop(p, None)
        self._key_tails = {k: v for k, v in self._key_tails.items() if k[0] not in parts}
        self.paused -= parts
        self._closing -= parts
