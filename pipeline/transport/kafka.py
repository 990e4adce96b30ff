"""Kafka edge: the FastStream broker, the Publisher it backs, and topic creation."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    PolicyViolationError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnsupportedForMessageFormatError,
    for_code,
)
from faststream.kafka import KafkaBroker

from pipeline.settings import Settings
from pipeline.transport.records import PublishRefused

log = logging.getLogger(__name__)


def build_broker(settings: Settings, *, client_suffix: str = "") -> KafkaBroker:
    """One broker per process: an idempotent producer that waits for every in-sync replica, sized
    so that every record the worker builds (a too-large request's dead letter included) fits."""
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=settings.kafka_client_id + client_suffix,
        enable_idempotence=settings.kafka_idempotent_producer,
        acks="all",
        linger_ms=1,
        max_request_size=settings.record_limit_bytes,
        logger=logging.getLogger("pipeline.kafka"),
        log_level=logging.DEBUG,
    )


def build_consumer(settings: Settings, group_id: str) -> AIOKafkaConsumer:
    """A group consumer that never auto-commits: the intake commits finished prefixes itself."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=settings.kafka_client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=max(100, settings.kafka_session_timeout_ms // 3),
    )


#: Broker and client errors that no retry can cure: the record or its topic is wrong, not the cluster.
_REFUSALS: tuple[tuple[type[KafkaError], str], ...] = (
    (MessageSizeTooLargeError, "too_large"),
    (RecordListTooLargeError, "too_large"),
    (RecordTooLargeError, "too_large"),
    (InvalidTopicError, "invalid_topic"),
    (TopicAuthorizationFailedError, "not_authorized"),
    (CorruptRecordException, "invalid_record"),
    (InvalidTimestampError, "invalid_record"),
    (UnsupportedForMessageFormatError, "invalid_record"),
    (PolicyViolationError, "invalid_record"),
)


def publish_refusal(exc: BaseException) -> str | None:
    """The refusal reason when `exc` means "this record can never be written", else None (an outage)."""
    for cls, reason in _REFUSALS:
        if isinstance(exc, cls):
            return reason
    return None


def is_kafka_outage(exc: BaseException) -> bool:
    """The cluster is unreachable, moving leaders or timing out: retry. A refusal is not an outage."""
    return isinstance(exc, KafkaError) and publish_refusal(exc) is None


class BrokerPublisher:
    """`Publisher` over FastStream; `publish` returns after the broker acknowledged the record.

    Permanent refusals (see `_REFUSALS`) become `PublishRefused`; everything else (broker down,
    leader moving, timeouts) propagates as it is and is retried by the caller.
    """

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    @classmethod
    def from_settings(cls, settings: Settings, *, client_suffix: str = "") -> BrokerPublisher:
        return cls(build_broker(settings, client_suffix=client_suffix))

    async def start(self) -> None:
        await self._broker.start()

    async def stop(self) -> None:
        await self._broker.stop()

    async def ping(self, timeout: float) -> bool:
        """The broker answers within `timeout` seconds (readiness)."""
        return bool(await self._broker.ping(timeout=timeout))

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str]) -> None:
        try:
            await self._broker.publish(value, topic=topic, key=key, headers=headers)
        except KafkaError as exc:
            reason = publish_refusal(exc)
            if reason is None:
                raise
            raise PublishRefused(topic, reason, f"{type(exc).__name__}: {exc}") from exc


def pipeline_topics(settings: Settings) -> list[str]:
    return [
        settings.topic_requests, settings.topic_replies, settings.topic_usage, settings.topic_dlq,
        settings.topic_usage_dlq, settings.topic_alerts,
    ]


async def ensure_topics(
    bootstrap_servers: str, topics: list[str], *, partitions: int, timeout_s: float = 30,
    max_message_bytes: int | None = None,
) -> None:
    """Create missing topics and wait until every partition has a leader (idempotent).

    Replication 1 suits local brokers; production clusters should create topics with their
    own tooling and run workers with PIPELINE_CREATE_TOPICS=false. Existing topics are left
    as they are, whatever their partition count. `max_message_bytes` sets the new topics'
    `max.message.bytes` (the worker passes its record limit, so what it may write, the broker takes).
    """
    names = list(dict.fromkeys(topics))
    if not names:
        return
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, client_id="llm-pipeline-admin", request_timeout_ms=int(timeout_s * 1000)
    )
    await admin.start()
    try:
        configs = {"max.message.bytes": str(max_message_bytes)} if max_message_bytes else None
        response = await admin.create_topics([NewTopic(n, partitions, 1, topic_configs=configs) for n in names])
        for topic_error in response.topic_errors:
            topic, code = topic_error[0], topic_error[1]
            if code and code != TopicAlreadyExistsError.errno:
                message = topic_error[2] if len(topic_error) > 2 else ""
                raise for_code(code)(f"create topic {topic!r}: {message}")
        # The controller answers before partitions are live; wait so the first produce or
        # assignment does not race the broker.
        await _wait_for_leaders(admin, names, timeout_s)
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float) -> dict[str, list[int]]:
    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        pending = [
            t["topic"] for t in described
            if t["error_code"] or not t["partitions"] or any(p["leader"] < 0 for p in t["partitions"])
        ]
        if not pending:
            return {t["topic"]: sorted(p["partition"] for p in t["partitions"]) for t in described}
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics missing or without leaders after {timeout_s}s: {pending}")
        await asyncio.sleep(0.05)


async def topic_partitions(bootstrap_servers: str, topic: str, *, timeout_s: float = 30) -> list[int]:
    """Partition ids of an existing topic, waiting (up to `timeout_s`) for it to appear.

    aiokafka consumers only learn metadata of subscribed topics; readers that assign
    partitions themselves (reply readers, tests) ask the cluster here instead.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="llm-pipeline-admin")
    await admin.start()
    try:
        return (await _wait_for_leaders(admin, [topic], timeout_s))[topic]
    finally:
        await admin.close()
