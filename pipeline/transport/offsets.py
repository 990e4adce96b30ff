"""Per-partition offset bookkeeping for out-of-order completion (no I/O).

Records of one partition are dispatched in offset order but finish in any order. The safe
commit point of a partition is its lowest unfinished offset: committing past it would lose
that record on a crash. `OffsetTracker` answers "what may be committed now" for every
partition, so the consumer loop stays a thin driver (the shape of aiokafka's SubscriptionState).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

TP = TypeVar("TP", bound=Hashable)


@dataclass(slots=True)
class PartitionOffsets:
    """Dispatched offsets of one partition, in dispatch order, and which of them finished."""

    pending: deque[int] = field(default_factory=deque)
    unfinished: set[int] = field(default_factory=set)
    finished: set[int] = field(default_factory=set)
    next_commit: int | None = None  # offset to commit next (Kafka commits "next offset to read")
    committed: int | None = None

    def start(self, offset: int) -> None:
        if self.pending and offset <= self.pending[-1]:
            raise ValueError(f"offset {offset} dispatched after {self.pending[-1]}: offsets must increase")
        if self.next_commit is not None and offset < self.next_commit:
            raise ValueError(f"offset {offset} is below the commit point {self.next_commit}")
        self.pending.append(offset)
        self.unfinished.add(offset)

    def finish(self, offset: int) -> None:
        if offset in self.unfinished:
            self.unfinished.discard(offset)
            self.finished.add(offset)
            while self.pending and self.pending[0] in self.finished:
                done = self.pending.popleft()
                self.finished.discard(done)
                self.next_commit = done + 1

    @property
    def in_flight(self) -> int:
        return len(self.unfinished)


class OffsetTracker(Generic[TP]):
    """Commit points for many partitions: `{tp: lowest unfinished offset}` (or last done + 1)."""

    def __init__(self) -> None:
        self._parts: dict[TP, PartitionOffsets] = {}

    def start(self, tp: TP, offset: int) -> None:
        self._parts.setdefault(tp, PartitionOffsets()).start(offset)

    def finish(self, tp: TP, offset: int) -> None:
        part = self._parts.get(tp)
        if part is not None:
            part.finish(offset)

    def in_flight(self, tp: TP | None = None) -> int:
        if tp is not None:
            part = self._parts.get(tp)
            return part.in_flight if part else 0
        return sum(p.in_flight for p in self._parts.values())

    def commit_points(self, only: Iterable[TP] | None = None) -> dict[TP, int]:
        """Offsets to commit now: only partitions whose commit point moved since the last commit."""
        tps = self._parts if only is None else [tp for tp in only if tp in self._parts]
        out: dict[TP, int] = {}
        for tp in tps:
            part = self._parts[tp]
            if part.next_commit is not None and part.next_commit != part.committed:
                out[tp] = part.next_commit
        return out

    def mark_committed(self, points: dict[TP, int]) -> None:
        for tp, offset in points.items():
            part = self._parts.get(tp)
            if part is not None:
                part.committed = offset

    def forget(self, tps: Iterable[TP]) -> None:
        """Drop partitions handed to another consumer; their unfinished records are redelivered there."""
        for tp in tps:
            self._parts.pop(tp, None)

    def partitions(self) -> list[TP]:
        return list(self._parts)
