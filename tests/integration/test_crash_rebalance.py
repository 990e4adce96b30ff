"""Crash and rebalance with worker *processes* on real Kafka, sharing idempotency state in Redis.

Slow (tens of seconds each): run apart with `-m slow`, excluded with `-m "not slow"`.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.transport.kafka import ensure_topics, topic_partitions
from tests.integration.kafka_helpers import encode, produce, read_topic, request_doc
from tests.integration.worker_process import start_worker_process, terminate, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
BURST = 500


async def collect_replies(bootstrap: str, topic: str, want: int, *, timeout_s: float, settle_s: float) -> dict:
    """request_id -> [(reply bytes, broker timestamp in s)], until `want` distinct ids arrived (+ settle)."""
    partitions = await topic_partitions({"bootstrap_servers": bootstrap}, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    replies: dict[str, list[tuple[bytes, float]]] = defaultdict(list)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline, settle_until = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    request_id = dict(r.headers or ()).get("correlation_id", b"").decode()
                    replies[request_id].append((r.value, r.timestamp / 1000))
            if len(replies) >= want:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
        return replies
    finally:
        await consumer.stop()


async def wait_for_calls(sim, n: int, worker, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while len(await sim.requests()) < n:
        assert worker.returncode is None, f"worker exited with {worker.returncode} (see its log)"
        assert time.monotonic() < deadline, "the worker never got going"
        await asyncio.sleep(0.1)


async def test_sigkill_mid_burst_loses_nothing_and_pays_at_most_in_flight_twice(
    settings, sim, redis_url, tmp_path,
) -> None:
    await sim.configure(latency_ms=1000, latency_jitter_ms=4000)  # 1 to 5 s per call
    await ensure_topics(settings,
                        [settings.topic_requests, settings.topic_replies, settings.topic_usage], partitions=4)
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests,
                  [(f"k{i}".encode(), encode(request_doc(f"burst-{i:03d}"))) for i in range(BURST)])
    env = worker_env(settings, redis_url)
    first = await start_worker_process(env, tmp_path / "worker-1.log")
    try:
        await wait_for_calls(sim, 150, first)
        # Kill once some requests were answered while many are still in flight.
        await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=30, timeout_s=60)
        first.send_signal(signal.SIGKILL)
        killed_at = time.time()
        await first.wait()
    finally:
        if first.returncode is None:
            first.kill()
    second = await start_worker_process(env, tmp_path / "worker-2.log")
    try:
        replies = await collect_replies(settings.kafka_bootstrap_servers, settings.topic_replies, BURST,
                                        timeout_s=120, settle_s=3)
    finally:
        await terminate(second)
    assert set(replies) == {f"burst-{i:03d}" for i in range(BURST)}, "every request gets a reply"
    assert all(len({v for v, _ in values}) == 1 for values in replies.values()), "never two different replies"
    calls = await sim.requests()
    # In flight at the kill: called before it, not yet replied before it (reply records carry the
    # producer's timestamp, taken when the reply was sent).
    called_before = {c["headers_subset"]["x-pipeline-request-id"] for c in calls if c["ts"] <= killed_at}
    replied_before = {rid for rid, values in replies.items() if min(ts for _, ts in values) <= killed_at}
    in_flight_at_kill = len(called_before - replied_before)
    assert in_flight_at_kill > 0 and replied_before, "the kill landed mid-burst"
    assert BURST <= len(calls) <= BURST + in_flight_at_kill


async def test_rebalance_mid_burst_duplicates_only_in_flight_work(settings, sim, redis_url, tmp_path) -> None:
    await sim.configure(latency_ms=500, latency_jitter_ms=1500)
    await ensure_topics(settings,
                        [settings.topic_requests, settings.topic_replies, settings.topic_usage], partitions=4)
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests,
                  [(f"k{i}".encode(), encode(request_doc(f"rb-{i:03d}"))) for i in range(BURST)])
    env = worker_env(settings, redis_url, PIPELINE_MAX_IN_FLIGHT="100", PIPELINE_PARTITION_WINDOW="25",
                     PIPELINE_SHUTDOWN_GRACE_S="1")
    first = await start_worker_process(env, tmp_path / "worker-1.log")
    second = None
    try:
        await wait_for_calls(sim, 60, first)
        # joins the group: partitions move mid-burst
        second = await start_worker_process(env, tmp_path / "worker-2.log")
        await wait_for_calls(sim, 250, second, timeout_s=90)
        await terminate(first)  # graceful (exit 0): grace period, commit, hand back
        replies = await collect_replies(settings.kafka_bootstrap_servers, settings.topic_replies, BURST,
                                        timeout_s=120, settle_s=3)
    finally:
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                await terminate(proc)
    assert set(replies) == {f"rb-{i:03d}" for i in range(BURST)}, "no gaps"
    assert all(len({v for v, _ in values}) == 1 for values in replies.values())
    calls = await sim.requests()
    per_request: dict[str, int] = defaultdict(int)
    for c in calls:
        per_request[c["headers_subset"].get("x-pipeline-request-id", "")] += 1
    # Work cut off by the grace period is called again on the new owner (bounded by the windows);
    # a request that was already replied is never called again (the shared store answers it).
    duplicates = sum(n - 1 for n in per_request.values() if n > 1)
    assert duplicates <= 100
    assert len(calls) == BURST + duplicates
