"""OffsetTracker: the commit point never passes an unfinished offset, whatever the finish order."""

import random

import pytest

from pipeline.transport.offsets import OffsetTracker


def test_commit_point_is_lowest_unfinished() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    for o in range(10, 15):
        t.start("p0", o)
    assert t.commit_points() == {}
    t.finish("p0", 11)
    t.finish("p0", 12)
    assert t.commit_points() == {}  # 10 still running: nothing may be committed
    t.finish("p0", 10)
    assert t.commit_points() == {"p0": 13}
    t.mark_committed({"p0": 13})
    assert t.commit_points() == {}  # unchanged since the last commit
    t.finish("p0", 14)
    assert t.commit_points() == {}  # 13 still in flight: the point has not moved
    t.finish("p0", 13)
    assert t.commit_points() == {"p0": 15}


def test_stuck_offset_holds_commit_while_later_ones_finish() -> None:
    t: OffsetTracker[int] = OffsetTracker()
    for o in range(101):
        t.start(0, o)
    for o in range(1, 101):
        t.finish(0, o)
    assert t.commit_points() == {} and t.in_flight(0) == 1
    t.finish(0, 0)
    assert t.commit_points() == {0: 101} and t.in_flight() == 0


def test_partitions_are_independent_and_forget_drops() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.start("a", 5)
    t.start("b", 7)
    t.finish("b", 7)
    assert t.commit_points() == {"b": 8}
    assert t.commit_points(only=["a"]) == {}
    t.forget(["b"])
    assert t.commit_points() == {} and t.partitions() == ["a"]


def test_duplicate_and_unknown_finishes_are_ignored() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.start("a", 1)
    t.finish("a", 99)
    t.finish("a", 1)
    t.finish("a", 1)
    t.finish("zzz", 1)
    assert t.commit_points() == {"a": 2}


def test_offsets_must_increase() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.start("a", 3)
    with pytest.raises(ValueError):
        t.start("a", 3)
    t.finish("a", 3)
    with pytest.raises(ValueError):
        t.start("a", 2)


@pytest.mark.parametrize("seed", range(25))
def test_random_finish_orders_never_commit_past_unfinished(seed: int) -> None:
    rng = random.Random(seed)
    t: OffsetTracker[int] = OffsetTracker()
    offsets = sorted(rng.sample(range(1000), 60))  # gaps, as with compacted or transactional topics
    for o in offsets:
        t.start(0, o)
    order = offsets[:]
    rng.shuffle(order)
    done: set[int] = set()
    for o in order:
        t.finish(0, o)
        done.add(o)
        point = t.commit_points().get(0)
        unfinished = [x for x in offsets if x not in done]
        if point is not None:
            assert all(x >= point for x in unfinished)
            assert all(x in done for x in offsets if x < point)
        t.mark_committed(t.commit_points())
    assert t.commit_points() == {} and t.in_flight() == 0
    assert t._parts[0].committed == offsets[-1] + 1
