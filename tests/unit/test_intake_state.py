"""IntakeState: pausing, key order, hand-back and commit timing of the intake, without a broker."""

from pipeline.transport.intake_state import IntakeState, Windows
from pipeline.transport.records import Partition

P0, P1 = Partition("requests", 0), Partition("requests", 1)


def test_a_full_partition_window_pauses_only_that_partition_and_resumes_it_when_work_ends() -> None:
    state: IntakeState[str] = IntakeState(Windows(max_in_flight=10, partition_window=2))
    state.started(P0, 0, None, "a")
    state.started(P0, 1, None, "b")
    change = state.pauses({P0, P1})
    assert change.pause == {P0} and not change.resume
    assert state.pauses({P0, P1}).pause == set()  # already paused: nothing to do again
    state.finished(P0, 0, None, ok=True)
    change = state.pauses({P0, P1})
    assert change.resume == {P0} and not change.pause


def test_the_global_limit_pauses_every_assigned_partition() -> None:
    state: IntakeState[str] = IntakeState(Windows(max_in_flight=2, partition_window=10))
    state.started(P0, 0, None, "a")
    state.started(P1, 5, None, "b")
    assert state.free_slots() == 0
    assert state.pauses({P0, P1}).pause == {P0, P1}


def test_a_partition_no_longer_assigned_is_not_resumed() -> None:
    state: IntakeState[str] = IntakeState(Windows(max_in_flight=1, partition_window=10))
    state.started(P0, 0, None, "a")
    state.pauses({P0, P1})
    state.finished(P0, 0, None, ok=True)
    assert state.pauses({P0}).resume == {P0}  # P1 went away while paused: resuming it would raise


def test_records_of_one_key_wait_for_the_previous_one_only_when_ordered() -> None:
    ordered: IntakeState[str] = IntakeState(Windows(ordered_by_key=True))
    assert ordered.waits_for(P0, b"k") is None
    ordered.started(P0, 0, b"k", "first")
    assert ordered.waits_for(P0, b"k") == "first"
    assert ordered.waits_for(P0, b"other") is None
    assert ordered.waits_for(P1, b"k") is None  # keys are ordered per partition
    ordered.started(P0, 1, b"k", "second")
    ordered.finished(P0, 0, b"k", ok=True)
    assert ordered.waits_for(P0, b"k") == "second"  # the first ending does not drop the newer tail
    ordered.finished(P0, 1, b"k", ok=True)
    assert ordered.waits_for(P0, b"k") is None

    unordered: IntakeState[str] = IntakeState(Windows(ordered_by_key=False))
    unordered.started(P0, 0, b"k", "first")
    assert unordered.waits_for(P0, b"k") is None


def test_only_the_finished_prefix_is_committed_and_a_cancelled_record_holds_it() -> None:
    state: IntakeState[str] = IntakeState(Windows())
    for offset in (10, 11, 12):
        state.started(P0, offset, None, f"r{offset}")
    state.finished(P0, 11, None, ok=True)
    state.finished(P0, 10, None, ok=False)  # cancelled by a hand-back: must be redelivered
    state.finished(P0, 12, None, ok=True)
    assert state.commit_points(now=0.0) == {}
    assert state.in_flight == 0


def test_a_commit_is_due_after_enough_completions_or_enough_time() -> None:
    state: IntakeState[str] = IntakeState(Windows(commit_every=2, commit_interval_s=5.0), now=100.0)
    state.started(P0, 0, None, "a")
    state.started(P0, 1, None, "b")
    state.finished(P0, 0, None, ok=True)
    assert not state.commit_due(now=101.0)
    state.finished(P0, 1, None, ok=True)
    assert state.commit_due(now=101.0)
    points = state.commit_points(now=101.0)
    assert points == {P0: 2}
    state.committed(points)
    assert not state.commit_due(now=102.0)
    assert state.commit_due(now=106.0)
    assert state.commit_points(now=106.0) == {}  # nothing moved since the last commit


def test_a_partition_being_handed_back_accepts_nothing_and_is_forgotten_afterwards() -> None:
    state: IntakeState[str] = IntakeState(Windows(max_in_flight=10, partition_window=1, ordered_by_key=True))
    state.started(P0, 0, b"k", "a")
    state.started(P1, 0, None, "b")
    state.pauses({P0, P1})
    assert state.hand_back({P0}) == ["a"]
    assert not state.accepts(P0) and state.accepts(P1)
    state.handed_back({P0})
    assert state.accepts(P0)
    assert state.running() == ["b"]
    assert state.next_offset(P0) is None and state.waits_for(P0, b"k") is None
    assert P0 not in state.paused and P0 not in state.partitions()


def test_an_undecodable_record_is_skipped_as_finished() -> None:
    state: IntakeState[str] = IntakeState(Windows())
    state.started(P0, 0, None, "a")
    state.finished(P0, 0, None, ok=True)
    state.skipped(P0, 1)
    assert state.next_offset(P0) == 2
    assert state.commit_points(now=0.0) == {P0: 2}
