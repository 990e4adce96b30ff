"""Kafka topics: creating the pipeline's topics (idempotently, within the principal's ACLs) and
waiting until their partitions have leaders.

Apart from the clients and the publisher because it is start-up administration, run once per
worker (or by ``pipeline check``, the client and tests), with its own failure modes: a principal
without CREATE permission, topics that exist already, partitions not yet led.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
    for_code,
)

from pipeline.settings import Settings
from pipeline.transport.kafka_connect import KafkaAccess, kafka_admin
from pipeline.transport.kafka_security import KafkaTarget

# The name it logged under before topic creation had a module of its own: logging configs keep working.
log = logging.getLogger("pipeline.transport.kafka")


def pipeline_topics(settings: Settings) -> list[str]:
    return [
        settings.topic_requests, settings.topic_replies, settings.topic_usage, settings.topic_dlq,
        settings.topic_usage_dlq, settings.topic_alerts,
    ]


async def ensure_topics(
    kafka: KafkaTarget, topics: list[str], *, partitions: int, timeout_s: float = 30,
    max_message_bytes: int | None = None,
) -> None:
    """Create missing topics and wait until every partition has a leader (idempotent).

    `kafka` is the Settings (their cluster and security) or aiokafka options with `bootstrap_servers`.
    Replication 1 suits local brokers; production clusters should create topics with their
    own tooling and run workers with PIPELINE_CREATE_TOPICS=false. Existing topics are left
    as they are, whatever their partition count. `max_message_bytes` sets the new topics'
    `max.message.bytes` (the worker passes its record limit, so what it may write, the broker takes).
    A principal without CREATE permission is refused even for a topic that exists (error 29, not 36):
    such a topic is then described instead, and only one that does not exist (or cannot be seen) fails.
    """
    names = list(dict.fromkeys(topics))
    if not names:
        return
    async with kafka_admin(kafka, request_timeout_ms=int(timeout_s * 1000)) as admin:
        configs = {"max.message.bytes": str(max_message_bytes)} if max_message_bytes else None
        response = await admin.create_topics([NewTopic(n, partitions, 1, topic_configs=configs) for n in names])
        refused: list[str] = []
        for topic_error in response.topic_errors:
            topic, code = topic_error[0], topic_error[1]
            if code in (TopicAuthorizationFailedError.errno, ClusterAuthorizationFailedError.errno):
                refused.append(topic)
            elif code and code != TopicAlreadyExistsError.errno:
                message = topic_error[2] if len(topic_error) > 2 else ""
                raise for_code(code)(f"create topic {topic!r}: {message}")
        if refused:
            await _require_existing(admin, refused, KafkaAccess.of(kafka))
        # The controller answers before partitions are live; wait so the first produce or
        # assignment does not race the broker.
        await _wait_for_leaders(admin, names, timeout_s)


async def _require_existing(admin: AIOKafkaAdminClient, names: list[str], access: KafkaAccess) -> None:
    """Topics the principal may not create: fine when they exist, else an error saying what to do."""
    who = f"user {access.sasl_username!r}" if access.sasl_username else "this client"
    for described in await admin.describe_topics(names):
        topic, code = described["topic"], described["error_code"]
        if code == UnknownTopicOrPartitionError.errno:
            raise TopicAuthorizationFailedError(
                f"topic {topic!r} does not exist and {who} may not create it: create it with your tooling "
                "(then PIPELINE_CREATE_TOPICS=false) or grant CREATE on it"
            )
        if code:
            raise TopicAuthorizationFailedError(
                f"{who} may not create topic {topic!r} nor describe it (error {code}): grant DESCRIBE "
                "(and the READ or WRITE it needs) on it"
            )
        log.info("topic %s exists; %s may not create topics, so it was not created", topic, who)


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float) -> dict[str, list[int]]:
    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        if denied := [t["topic"] for t in described if t["error_code"] == TopicAuthorizationFailedError.errno]:
            raise TopicAuthorizationFailedError(f"not authorized to describe topics {denied}: grant DESCRIBE")
        pending = [
            t["topic"] for t in described
            if t["error_code"] or not t["partitions"] or any(p["leader"] < 0 for p in t["partitions"])
        ]
        if not pending:
            return {t["topic"]: sorted(p["partition"] for p in t["partitions"]) for t in described}
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics missing or without leaders after {timeout_s}s: {pending}")
        await asyncio.sleep(0.05)


async def topic_partitions(kafka: KafkaTarget, topic: str, *, timeout_s: float = 30) -> list[int]:
    """Partition ids of an existing topic, waiting (up to `timeout_s`) for it to appear.

    `kafka` as for `ensure_topics`. aiokafka consumers only learn metadata of subscribed topics;
    readers that assign partitions themselves (reply readers, tests) ask the cluster here instead.
    """
    async with kafka_admin(kafka) as admin:
        return (await _wait_for_leaders(admin, [topic], timeout_s))[topic]
