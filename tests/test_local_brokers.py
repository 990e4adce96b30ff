"""The local brokers start, accept partitioned topics and carry a message end to end."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.local import BrokerStartError, LocalBroker
from pipeline.local.apache_kafka import ApacheKafka
from pipeline.local.tansu import RECOMMENDED_CONSUMER_CONFIG, EmbeddedBroker
from pipeline.transport.kafka import ensure_topics


@pytest.fixture(scope="module")
def apache_kafka() -> Iterator[ApacheKafka]:
    with ApacheKafka() as broker:
        yield broker


@pytest.fixture(scope="module")
def tansu() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as broker:
        yield broker


async def _roundtrip(bootstrap: str, **consumer_config: int) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    await ensure_topics({"bootstrap_servers": bootstrap}, [topic], partitions=4)
    await ensure_topics({"bootstrap_servers": bootstrap}, [topic], partitions=4)  # idempotent

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert len(described["partitions"]) == 4

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b"hello", key=b"k1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"g-{topic}",
        auto_offset_reset="earliest", **consumer_config,
    )
    await consumer.start()
    try:
        msg = await consumer.getone()
    finally:
        await consumer.stop()
    assert (msg.value, msg.key, msg.partition, msg.offset) == (b"hello", b"k1", meta.partition, meta.offset)


@pytest.mark.kafka
async def test_apache_kafka_roundtrip(apache_kafka: ApacheKafka) -> None:
    assert isinstance(apache_kafka, LocalBroker)
    assert apache_kafka.pid and apache_kafka.bootstrap_servers.startswith("127.0.0.1:")
    await _roundtrip(apache_kafka.bootstrap_servers)


async def test_tansu_roundtrip(tansu: EmbeddedBroker) -> None:
    assert isinstance(tansu, LocalBroker)
    await _roundtrip(tansu.bootstrap_servers, **RECOMMENDED_CONSUMER_CONFIG)


def test_start_failure_reports_logs() -> None:
    # A port someone else holds: tansu panics on bind and the error must say why.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        broker = EmbeddedBroker(port=s.getsockname()[1])
        with pytest.raises(BrokerStartError, match="Address in use"):
            broker.start(timeout_s=10)
    assert broker.pid is None and broker.work_dir is None


@pytest.mark.kafka
@pytest.mark.slow
async def test_apache_kafka_kill_and_restart_keeps_data() -> None:
    with ApacheKafka() as broker:
        topic = "durable"
        await ensure_topics({"bootstrap_servers": broker.bootstrap_servers}, [topic], partitions=1)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
        await producer.start()
        await producer.send_and_wait(topic, b"before-crash")
        await producer.stop()
        broker.kill()
        broker.restart()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest")
        await consumer.start()
        try:
            assert (await consumer.getone()).value == b"before-crash"
        finally:
            await consumer.stop()
