"""Records that used to wedge a partition, on real Apache Kafka at the default limits.

A too-large request, a reply or dead letter a topic refuses for good, a record the Kafka client
cannot decode, a record whose handling keeps raising: each ends in a dead letter (or a counted
skip), the partition moves on, and the intake stays up.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import httpx
import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY

from pipeline.contracts.models import CompletionReply, ErrorCode
from pipeline.transport.kafka import build_consumer, ensure_topics
from pipeline.transport.kafka_intake import ConcurrentIntake, FailurePolicy, IntakeLimits
from tests.integration.kafka_helpers import (
    committed,
    encode,
    eventually,
    header,
    produce,
    read_topic,
    request_doc,
)
from tests.integration.worker_process import start_worker_process, terminate, worker_env

pytestmark = pytest.mark.kafka

MIB = 1024 * 1024


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def replies_by_id(records) -> dict[str, CompletionReply]:
    return {r.request_id: r for r in (CompletionReply.model_validate_json(x.value) for x in records)}


@pytest.mark.slow
async def test_a_2_mib_request_at_default_limits_is_dead_lettered_and_the_partition_moves_on(
    settings, sim, redis_url, tmp_path,
) -> None:
    # The upstream topic takes 8 MiB records (as the worker creates it); the worker's own limit
    # (PIPELINE_MAX_MESSAGE_BYTES) stays at its 1 MiB default.
    await ensure_topics(settings, [settings.topic_requests], partitions=1,
                        max_message_bytes=8 * MIB)
    huge = encode(request_doc("huge", messages=[{"role": "user", "content": "x" * (2 * MIB)}]))
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests,
                  [(b"same", huge), (b"same", encode(request_doc("after-huge")))])
    env = worker_env(settings, redis_url, PIPELINE_SHUTDOWN_GRACE_S="30", PIPELINE_LOG_LEVEL="INFO")
    worker = await start_worker_process(env, tmp_path / "worker-1.log")
    try:
        # The worker creates its topics (DLQ at the record limit); reading before that would let the
        # broker auto-create the DLQ at its 1 MiB default.
        await eventually(lambda: _log_says(tmp_path / "worker-1.log", "assigned"), timeout_s=60)
        dead = await read_topic(settings.kafka_bootstrap_servers, settings.topic_dlq, count=1, timeout_s=60)
        assert dead[0].value == huge  # the original bytes, unchanged
        assert header(dead[0], "dlq_reason") == "too_large" and header(dead[0], "dlq_request_id") == "huge"
        replies = replies_by_id(await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=2))
        assert replies["huge"].error.code == ErrorCode.TOO_LARGE
        assert replies["after-huge"].status == "ok"  # the next record on the same partition
        tp = TopicPartition(settings.topic_requests, 0)
        await eventually(lambda: _committed_is(settings, tp, 2))
        stopping = time.monotonic()
        await terminate(worker)
        assert time.monotonic() - stopping < 10, "nothing in flight: no grace period to wait"
    finally:
        if worker.returncode is None:
            worker.kill()
    calls = len(await sim.requests())
    assert calls == 1
    restarted = await start_worker_process(env, tmp_path / "worker-2.log")
    try:
        await eventually(lambda: _log_says(tmp_path / "worker-2.log", "assigned"), timeout_s=60)
        await asyncio.sleep(2)
    finally:
        await terminate(restarted)
    assert len(await sim.requests()) == calls, "a restart calls nothing again"


async def _committed_is(settings, tp: TopicPartition, offset: int) -> bool:
    return await committed(settings.kafka_bootstrap_servers, settings.consumer_group, tp) == offset


async def _log_says(path, text: str) -> bool:
    return text in path.read_text(errors="replace")


async def test_a_reply_its_topic_refuses_dead_letters_the_request_and_the_partition_moves_on(
    settings, start_worker,
) -> None:
    small = settings.topic_replies + ".default.small"  # allowed by the {replies}.{tenant}.* pattern
    await ensure_topics(settings, [small], partitions=1, max_message_bytes=600)
    await ensure_topics(settings, [settings.topic_requests], partitions=1)
    await start_worker()
    before = metric("llm_publish_refused_total", kind="reply", reason="too_large")
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests, [
        (b"k", encode(request_doc("to-small", reply_to=small, metadata={"pad": "p" * 800}))),
        (b"k", encode(request_doc("next-one"))),
    ])
    dead = await read_topic(settings.kafka_bootstrap_servers, settings.topic_dlq, count=1)
    assert header(dead[0], "dlq_reason") == "reply_undeliverable"
    assert header(dead[0], "dlq_request_id") == "to-small"
    assert "too_large" in header(dead[0], "dlq_detail")
    replies = replies_by_id(await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=1))
    assert replies["next-one"].status == "ok"
    await eventually(lambda: _committed_is(settings, TopicPartition(settings.topic_requests, 0), 2))
    assert metric("llm_publish_refused_total", kind="reply", reason="too_large") == before + 1


async def test_a_dead_letter_the_dlq_refuses_goes_without_its_bytes_and_else_is_skipped_and_counted(
    settings, start_worker,
) -> None:
    await ensure_topics(settings, [settings.topic_requests], partitions=1)
    await ensure_topics(settings, [settings.topic_dlq], partitions=1, max_message_bytes=2000)
    await start_worker()
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests, [
        (b"k", b"{not json " + b"x" * 5000),
        (b"k", encode(request_doc("after-bad"))),
    ])
    dead = await read_topic(settings.kafka_bootstrap_servers, settings.topic_dlq, count=1)
    assert dead[0].value == b"" and header(dead[0], "dlq_reason") == "invalid_json"
    assert header(dead[0], "dlq_value_omitted").startswith("5010 bytes")
    assert header(dead[0], "dlq_source_offset") == "0"
    replies = replies_by_id(await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=1))
    assert replies["after-bad"].status == "ok"
    await eventually(lambda: _committed_is(settings, TopicPartition(settings.topic_requests, 0), 2))


async def test_even_an_empty_dead_letter_refused_is_skipped_with_a_metric(settings, start_worker) -> None:
    await ensure_topics(settings, [settings.topic_requests], partitions=1)
    await ensure_topics(settings, [settings.topic_dlq], partitions=1, max_message_bytes=64)
    await start_worker()
    before = metric("llm_records_skipped_total", topic=settings.topic_requests, reason="invalid_json")
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests, [
        (b"k", b"{not json"), (b"k", encode(request_doc("after-skip"))),
    ])
    replies = replies_by_id(await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=1))
    assert replies["after-skip"].status == "ok"
    await eventually(lambda: _committed_is(settings, TopicPartition(settings.topic_requests, 0), 2))
    assert metric("llm_records_skipped_total", topic=settings.topic_requests, reason="invalid_json") == before + 1


_BAD_HEADER_PRODUCER = """
import asyncio, sys
from aiokafka import AIOKafkaProducer

class NotUtf8(str):
    # What a librdkafka producer can send: header key bytes that are not UTF-8.
    def encode(self, *args, **kwargs):
        return b"\\xff\\xfe-key"

async def main(bootstrap, topic):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b'{"request_id": "bad-header"}', key=b"k",
                                     headers=[(NotUtf8("x"), b"1")])
    finally:
        await producer.stop()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def produce_with_undecodable_header(bootstrap: str, topic: str) -> None:
    """The pure-Python record builder (AIOKAFKA_NO_EXTENSIONS) writes whatever bytes `encode` gives."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _BAD_HEADER_PRODUCER, bootstrap, topic,
        env={**os.environ, "AIOKAFKA_NO_EXTENSIONS": "1"}, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


async def test_a_record_with_a_header_key_that_is_not_utf8_is_dead_lettered_and_intake_goes_on(
    settings, start_worker,
) -> None:
    await ensure_topics(settings, [settings.topic_requests], partitions=1)
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests, [(b"k", encode(request_doc("before")))])
    await produce_with_undecodable_header(settings.kafka_bootstrap_servers, settings.topic_requests)
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests, [(b"k", encode(request_doc("after")))])
    worker = await start_worker()
    dead = await read_topic(settings.kafka_bootstrap_servers, settings.topic_dlq, count=1)
    assert header(dead[0], "dlq_reason") == "undecodable_record"
    assert header(dead[0], "dlq_source_offset") == "1" and "UnicodeDecodeError" in header(dead[0], "dlq_detail")
    replies = replies_by_id(await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=2,
                                             settle_s=0.5))
    assert set(replies) == {"before", "after"}  # neither lost, neither answered twice
    await eventually(lambda: _committed_is(settings, TopicPartition(settings.topic_requests, 0), 3))
    async with httpx.AsyncClient() as http:
        ready = await http.get(f"http://127.0.0.1:{worker.http.port}/readyz")
    assert ready.status_code == 200


async def test_an_intake_that_dies_makes_the_worker_not_ready_and_wakes_the_process(settings, start_worker) -> None:
    worker = await start_worker()
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{worker.http.port}/readyz")).status_code == 200
        waiting = asyncio.create_task(worker.until_failed())
        worker.intake._loop_task.cancel()  # what a bug escaping the loop would do
        failure = await asyncio.wait_for(waiting, 5)
        assert isinstance(failure, asyncio.CancelledError)
        ready = await http.get(f"http://127.0.0.1:{worker.http.port}/readyz")
    assert ready.status_code == 503 and "intake" in ready.json()


async def test_a_record_whose_handling_keeps_raising_is_given_up_after_bounded_tries(settings) -> None:
    """Not an outage: tried `poison_max_attempts` times, handed to give_up, committed past."""
    topic = settings.topic_requests
    await ensure_topics(settings, [topic], partitions=1)
    tries: dict[int, int] = {}
    given_up: list[tuple[int, str, int]] = []

    async def process(record) -> None:
        tries[record.offset] = tries.get(record.offset, 0) + 1
        if record.value == b"poison":
            raise ValueError("Maximum serialization depth exceeded")

    async def give_up(record, exc, attempts) -> None:
        given_up.append((record.offset, str(exc), attempts))

    intake = ConcurrentIntake(build_consumer(settings, settings.consumer_group), topic, process,
                              IntakeLimits(commit_every=1, commit_interval_s=0.1, retry_backoff_s=0.01,
                                           poison_max_attempts=3),
                              FailurePolicy(give_up=give_up))
    await intake.start()
    try:
        await produce(settings.kafka_bootstrap_servers, topic, [(None, b"ok-0"), (None, b"poison"), (None, b"ok-2")])
        await eventually(lambda: _committed_is(settings, TopicPartition(topic, 0), 3))
    finally:
        await intake.stop()
    assert given_up == [(1, "Maximum serialization depth exceeded", 3)]
    assert tries == {0: 1, 1: 3, 2: 1}


async def test_an_outage_is_retried_while_the_partition_waits(settings) -> None:
    topic = settings.topic_requests
    await ensure_topics(settings, [topic], partitions=1)
    failures = 6  # more than poison_max_attempts: an outage is never given up on

    async def process(record) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("broker unreachable")

    given_up: list[int] = []

    async def give_up(record, exc, attempts) -> None:
        given_up.append(record.offset)

    intake = ConcurrentIntake(build_consumer(settings, settings.consumer_group), topic, process,
                              IntakeLimits(commit_every=1, commit_interval_s=0.1, retry_backoff_s=0.01,
                                           poison_max_attempts=3),
                              FailurePolicy(is_outage=lambda exc: isinstance(exc, ConnectionError), give_up=give_up))
    await intake.start()
    try:
        await produce(settings.kafka_bootstrap_servers, topic, [(None, b"m")])
        await eventually(lambda: _committed_is(settings, TopicPartition(topic, 0), 1))
    finally:
        await intake.stop()
    assert failures == 0 and given_up == []
