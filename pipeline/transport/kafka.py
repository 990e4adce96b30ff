"""Kafka edge: the FastStream broker, the Publisher it backs, and topic creation."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from pipeline.settings import Settings

log = logging.getLogger(__name__)


def build_broker(settings: Settings, *, client_suffix: str = "") -> KafkaBroker:
    """One broker per process: an idempotent producer that waits for every in-sync replica."""
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=settings.kafka_client_id + client_suffix,
        enable_idempotence=settings.kafka_idempotent_producer,
        acks="all",
        linger_ms=1,
        logger=logging.getLogger("pipeline.kafka"),
        log_level=logging.DEBUG,
    )


class BrokerPublisher:
    """`Publisher` over FastStream; `publish` returns after the broker acknowledged the record."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str]) -> None:
        await self._broker.publish(value, topic=topic, key=key, headers=headers)


def pipeline_topics(settings: Settings) -> list[str]:
    return [
        settings.topic_requests, settings.topic_replies, settings.topic_usage, settings.topic_dlq,
        settings.topic_usage_dlq,
    ]


async def ensure_topics(bootstrap_servers: str, topics: list[str], *, partitions: int) -> None:
    """Create missing topics (idempotent). Replication 1 suits local brokers; real clusters
    should create topics with their own tooling and set PIPELINE_CREATE_TOPICS=false."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="llm-pipeline-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if not missing:
            return
        try:
            await admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing])
        except TopicAlreadyExistsError:
            pass  # created concurrently by another worker
        log.info("created topics %s with %d partitions", missing, partitions)
    finally:
        await admin.close()
