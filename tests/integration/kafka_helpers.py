"""Small aiokafka helpers for tests: publish raw records, read a topic from the beginning."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from pipeline.transport.kafka import topic_partitions


async def produce(bootstrap: str, topic: str, values: list[tuple[bytes | None, bytes | None]]) -> None:
    """Publish (key, value) pairs with a plain producer, as an upstream service would."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024)
    await producer.start()
    try:
        for key, value in values:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def request_doc(request_id: str, task_type: str = "summarize", **extra: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "task_type": task_type,
        "messages": [{"role": "user", "content": f"please handle {request_id}"}],
        **extra,
    }


def encode(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


async def read_topic(
    bootstrap: str, topic: str, *, count: int | None, timeout_s: float = 60, settle_s: float = 0.0
) -> list[ConsumerRecord]:
    """Read `count` records from the start of every partition (no consumer group).

    With `settle_s`, keep reading that long after reaching `count` to catch unexpected extras.
    With `count=None`, read every record up to the partitions' end offsets as they are when the
    read starts (however many that is, none included).
    """
    deadline = time.monotonic() + timeout_s
    partitions = await topic_partitions({"bootstrap_servers": bootstrap}, topic, timeout_s=timeout_s)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps) if count is None else {}
        records: list[ConsumerRecord] = []
        settle_until = None
        while time.monotonic() < deadline:
            if count is None and not [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                return records
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            if count is not None and len(records) >= count:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    return records
        wanted = f"the end offsets {ends}" if count is None else f"{count} records"
        raise TimeoutError(f"read {len(records)} records of {topic} within {timeout_s}s, not {wanted}")
    finally:
        await consumer.stop()


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout_s: float = 30, interval_s: float = 0.2) -> Any:
    """Poll an async predicate until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s (last value: {last!r})")


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    """The group's committed offset of one partition (None: nothing committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


def header(record: ConsumerRecord, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return value.decode()
    return None
