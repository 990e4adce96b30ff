"""Delivery guarantees on real Apache Kafka: commits, redelivery, poison records, slow providers."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import pytest
from aiokafka import TopicPartition

from pipeline.contracts.models import CompletionReply, ErrorCode
from pipeline.transport.kafka import build_consumer, ensure_topics
from pipeline.transport.kafka_intake import ConcurrentIntake, IntakeLimits
from pipeline.transport.llm import LiteLLMProvider
from tests.integration.kafka_helpers import (
    committed,
    encode,
    eventually,
    header,
    produce,
    read_topic,
    request_doc,
)

pytestmark = pytest.mark.kafka


async def test_stuck_offset_holds_the_commit_until_it_finishes(settings) -> None:
    """Offset k is held while k+1..k+n finish: the committed offset stays at k until k is done."""
    topic = settings.topic_requests
    await ensure_topics(settings, [topic], partitions=1)
    release = asyncio.Event()
    finished: list[int] = []

    async def process(record) -> None:
        if record.offset == 3:
            await release.wait()
        finished.append(record.offset)

    intake = ConcurrentIntake(build_consumer(settings, settings.consumer_group), topic, process,
                              IntakeLimits(commit_every=1, commit_interval_s=0.1))
    await intake.start()
    try:
        await produce(settings.kafka_bootstrap_servers, topic, [(None, f"m{i}".encode()) for i in range(10)])
        await eventually(lambda: _true(len(finished) == 9))
        await asyncio.sleep(0.5)  # several commit intervals pass while offset 3 is stuck
        tp = TopicPartition(topic, 0)
        assert await committed(settings.kafka_bootstrap_servers, settings.consumer_group, tp) == 3
        release.set()
        await eventually(lambda: _committed_is(settings, tp, 10))
    finally:
        await intake.stop()


async def _true(value: bool) -> bool:
    return value


async def _committed_is(settings, tp, offset: int) -> bool:
    return await committed(settings.kafka_bootstrap_servers, settings.consumer_group, tp) == offset


async def test_many_slow_calls_in_flight_on_one_partition(settings, start_worker, sim) -> None:
    """40 calls of 1 s on a single partition overlap: the window, not the partition, bounds them."""
    await ensure_topics(settings, [settings.topic_requests], partitions=1)
    await sim.configure(latency_ms=1000)
    await start_worker()
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests,
                  [(b"same-key", encode(request_doc(f"slow-{i}"))) for i in range(40)])
    records = await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=40)
    assert {CompletionReply.model_validate_json(r.value).request_id for r in records} == {
        f"slow-{i}" for i in range(40)}
    # Concurrency shows in the simulator's log: many calls started before the first one ended.
    calls = await sim.requests()
    first_end = min(c["ts"] for c in calls) + 1.0
    assert sum(1 for c in calls if c["ts"] < first_end) >= 20


async def test_redelivered_answered_request_gets_stored_reply_without_a_call(settings, start_worker, sim) -> None:
    worker = await start_worker()
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests, [(b"k", encode(request_doc("once")))])
    (first,) = await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=1)
    # The same request again, as after a crash before the commit.
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests, [(b"k", encode(request_doc("once")))])
    replies = await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=2, settle_s=1.0)
    assert len(replies) == 2 and replies[0].value == replies[1].value == first.value
    assert len(await sim.requests()) == 1
    db = settings.clickhouse_database
    await asyncio.sleep(1.0)  # two sink flush intervals: a second usage row would have landed
    assert (await worker.store.query(f"SELECT count() FROM {db}.llm_usage"))[0][0] == 1


class ExplodingProvider(LiteLLMProvider):
    """The real provider, except that one request id hits a bug (not a provider error)."""

    async def complete(self, spec, request, *, timeout_s, on_delta=None, stream_limits=None):
        if request.request_id == "poison":
            raise RuntimeError("bug triggered by this request")
        return await super().complete(spec, request, timeout_s=timeout_s, on_delta=on_delta,
                                      stream_limits=stream_limits)


async def test_poison_request_is_dead_lettered_after_bounded_attempts(settings, sim) -> None:
    from pipeline.catalog import load_catalog
    from pipeline.worker.app import create_worker

    await ensure_topics(settings, [settings.topic_requests], partitions=1)
    worker = create_worker(settings.model_copy(update={"poison_max_attempts": 3, "poison_backoff_s": 0.05}),
                           catalog=load_catalog(settings.config_dir), provider=ExplodingProvider())
    await worker.start()
    try:
        await produce(settings.kafka_bootstrap_servers, settings.topic_requests,
                      [(b"k", encode(request_doc("before"))), (b"k", encode(request_doc("poison"))),
                       (b"k", encode(request_doc("after")))])
        (dead,) = await read_topic(settings.kafka_bootstrap_servers, settings.topic_dlq, count=1)
        assert header(dead, "dlq_reason") == "internal_error" and header(dead, "dlq_attempts") == "3"
        assert "bug triggered" in header(dead, "dlq_detail") and header(dead, "dlq_request_id") == "poison"
        replies = {CompletionReply.model_validate_json(r.value).request_id: CompletionReply.model_validate_json(r.value)
                   for r in await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=3)}
        assert replies["poison"].error.code == ErrorCode.INTERNAL_ERROR
        assert replies["before"].status == "ok" and replies["after"].status == "ok"
        await eventually(lambda: _committed_is(settings, TopicPartition(settings.topic_requests, 0), 3))
    finally:
        await worker.stop()


async def test_provider_slower_than_max_poll_interval_does_not_evict(settings, start_worker, sim) -> None:
    """Calls of 4 s with max_poll_interval 2 s: polling continues while work runs; one call each."""
    await sim.configure(latency_ms=4000)
    await start_worker(kafka_max_poll_interval_ms=2000, kafka_session_timeout_ms=6000, provider_timeout_s=20)
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests,
                  [(f"k{i}".encode(), encode(request_doc(f"glacial-{i}"))) for i in range(8)])
    records = await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=8, settle_s=2.0)
    assert len(records) == 8
    assert len(await sim.requests()) == 8


async def test_all_candidates_rate_limited_waits_instead_of_failing(settings, start_worker, sim, tmp_path) -> None:
    """Each model's own 429 retries are used up (both deployments cool down); the request waits
    for the first cooldown to end and goes round again instead of failing."""
    from pipeline.catalog import load_catalog

    cfg = tmp_path / "cfg"
    cfg.mkdir()
    models = (settings.config_dir / "models.yaml").read_text()
    (cfg / "models.yaml").write_text(models.replace("models:\n", "defaults: {cooldown_s: 1.0}\nmodels:\n", 1))
    (cfg / "routing.yaml").write_text((settings.config_dir / "routing.yaml").read_text())
    await start_worker(catalog=load_catalog(cfg), rate_limit_wait_max_s=10)
    await sim.add_rule({"model": "gpt-4o-mini", "fault": "rate_limit", "retry_after_s": 0.2, "times": 3})
    await sim.add_rule({"model": "claude-haiku-4-5", "fault": "rate_limit", "retry_after_s": 0.2, "times": 3})
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests, [(b"k", encode(request_doc("patient")))])
    (record,) = await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=1)
    reply = CompletionReply.model_validate_json(record.value)
    assert reply.status == "ok" and reply.model == "sim-gpt-4o-mini"
    assert [(a.model, a.error_code) for a in reply.attempts] == (
        [("sim-gpt-4o-mini", ErrorCode.RATE_LIMITED)] * 3 + [("sim-claude-haiku", ErrorCode.RATE_LIMITED)] * 3
        + [("sim-gpt-4o-mini", None)])
    usage = await read_topic(settings.kafka_bootstrap_servers, settings.topic_usage, count=7)
    events = sorted((orjson.loads(u.value) for u in usage), key=lambda e: e["attempt"])
    assert [e["attempt"] for e in events] == list(range(1, 8))
    assert [e["is_fallback"] for e in events] == [False] * 3 + [True] * 3 + [False]


@pytest.mark.parametrize("ordered", [True, False])
async def test_per_key_ordering_is_optional(settings, ordered: bool) -> None:
    """With `ordered_by_key`, the records of one key run one at a time, in offset order, even when
    an early one is slow, and other keys go on past it. Without it, records of one key run
    concurrently (what order they then finish in is not promised, so it is not asserted)."""
    topic = settings.topic_requests
    await ensure_topics(settings, [topic], partitions=1)
    n = 30
    keys = (b"a", b"b")
    offsets_of = {key: [i for i in range(n) if (b"a" if i % 2 else b"b") == key] for key in keys}
    slow = offsets_of[b"a"][0]  # the first record of key "a" is held back (see below)
    running = dict.fromkeys(keys, 0)
    most_running = dict.fromkeys(keys, 0)
    started: dict[bytes, list[int]] = {key: [] for key in keys}
    finished: dict[bytes, list[int]] = {key: [] for key in keys}
    seen_while_held: list[bool] = []
    # Ordered: every "b" record finishes while the slow "a" one runs (keys are independent).
    # Unordered: a later "a" record starts while the slow one runs (one key, concurrently).
    awaited = asyncio.Event()

    def progress() -> None:
        if (len(finished[b"b"]) == len(offsets_of[b"b"])) if ordered else (len(started[b"a"]) >= 2):
            awaited.set()

    async def process(record) -> None:
        i, key = int(record.value), record.key
        running[key] += 1
        most_running[key] = max(most_running[key], running[key])
        started[key].append(i)
        progress()
        try:
            if i == slow:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(awaited.wait(), 10)
                seen_while_held.append(awaited.is_set())
            else:
                await asyncio.sleep(0.01)
        finally:
            running[key] -= 1
            finished[key].append(i)
            progress()

    intake = ConcurrentIntake(build_consumer(settings, settings.consumer_group), topic, process,
                              IntakeLimits(ordered_by_key=ordered))
    await intake.start()
    try:
        await produce(settings.kafka_bootstrap_servers, topic,
                      [(b"a" if i % 2 else b"b", str(i).encode()) for i in range(n)])
        await eventually(lambda: _true(sum(map(len, finished.values())) == n))
    finally:
        await intake.stop()
    assert {key: sorted(done) for key, done in finished.items()} == offsets_of  # each record once
    if ordered:
        assert most_running == {b"a": 1, b"b": 1}, f"records of one key overlapped: {most_running}"
        assert started == finished == offsets_of  # one key: started and finished in offset order
        assert seen_while_held == [True], "key b waited for key a's slow record"
    else:
        assert seen_while_held == [True], "no other record of key a started while its first one ran"
        assert most_running[b"a"] >= 2
