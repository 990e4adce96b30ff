"""Kafka edge: the FastStream broker, the Publisher it backs and the worker's group consumer.

Publishing is split from connecting (``kafka_connect``: clients whose start errors are
explained), security (``kafka_security``: TLS/SASL client options) and topic administration
(``kafka_topics``). This module stays the documented entry point: it re-exports the names the
rest of the pipeline, the tests and the benchmarks import from ``pipeline.transport.kafka``.
"""

from __future__ import annotations

import contextlib
import logging

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTimestampError,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    PolicyViolationError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnsupportedForMessageFormatError,
)
from faststream.kafka import KafkaBroker

from pipeline.settings import Settings
from pipeline.transport.connect_errors import KafkaConnectError
from pipeline.transport.kafka_connect import (
    KafkaAccess,
    explain_connect_failure,
    kafka_admin,
    kafka_consumer,
    kafka_producer,
    start_explained,
)
from pipeline.transport.kafka_security import KafkaTarget, kafka_client_options, kafka_security, kafka_ssl_context
from pipeline.transport.kafka_topics import ensure_topics, pipeline_topics, topic_partitions
from pipeline.transport.records import PublishRefused

__all__ = [
    "BrokerPublisher", "KafkaAccess", "KafkaTarget", "build_broker", "build_consumer", "ensure_topics",
    "explain_connect_failure", "is_kafka_outage", "kafka_admin", "kafka_client_options", "kafka_consumer",
    "kafka_producer", "kafka_security", "kafka_ssl_context", "pipeline_topics", "publish_refusal",
    "start_explained", "topic_partitions",
]


def build_broker(settings: Settings, *, client_suffix: str = "") -> KafkaBroker:
    """One broker per process: an idempotent producer that waits for every in-sync replica, sized
    so that every record the worker builds (a too-large request's dead letter included) fits."""
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        security=kafka_security(settings),
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
    return kafka_consumer(
        settings,
        client_id=settings.kafka_client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=max(100, settings.kafka_session_timeout_ms // 3),
        metadata_max_age_ms=settings.kafka_metadata_max_age_ms,  # new topics of a pattern subscription
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

    def __init__(self, broker: KafkaBroker, settings: Settings | None = None) -> None:
        self._broker = broker
        self._settings = settings

    @classmethod
    def from_settings(cls, settings: Settings, *, client_suffix: str = "") -> BrokerPublisher:
        return cls(build_broker(settings, client_suffix=client_suffix), settings)

    async def start(self) -> None:
        """Connect; a failure to connect raises KafkaConnectError naming its cause."""
        if self._settings is None:
            await self._broker.start()
            return
        # FastStream drops (unclosed) a producer whose start failed: find out first, with a client we close.
        async with kafka_admin(self._settings):
            pass
        try:
            await start_explained(self._broker.start, KafkaAccess.of(self._settings))
        except KafkaConnectError:
            with contextlib.suppress(Exception):
                await self._broker.stop()
            raise

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

