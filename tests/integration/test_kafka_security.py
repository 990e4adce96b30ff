"""Kafka security end to end, against a real Apache Kafka behind SASL_SSL with ACLs.

One secured broker (`SecuredApacheKafka`: TLS with a CA made at start, SCRAM-SHA-512 and PLAIN,
the StandardAuthorizer denying what no ACL allows) is started once, only for these tests. The
worker, the usage sink and the PipelineClient run as least-privilege principals: the ACLs below
grant exactly the topics and groups each needs, and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.errors import TopicAuthorizationFailedError

from pipeline.catalog import load_catalog
from pipeline.client import PipelineClient
from pipeline.contracts.models import CompletionRequest
from pipeline.local.apache_kafka import SecuredApacheKafka
from pipeline.settings import Settings
from pipeline.transport.connect_errors import KafkaConnectError
from pipeline.transport.kafka import BrokerPublisher, ensure_topics, kafka_producer
from pipeline.transport.records import PublishRefused
from pipeline.worker.app import create_worker
from tests.integration.kafka_helpers import eventually

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[2]

#: Distinctive, so that a leak anywhere shows up in a plain substring search.
WORKER_PW = "worker-pw-LEAKCHECK-51c9"
ALPHA_PW = "alpha-pw-LEAKCHECK-8e2d"
WRONG_PW = "wrong-pw-LEAKCHECK-0b7a"


@dataclass(frozen=True)
class Cluster:
    broker: SecuredApacheKafka
    run: str
    beta_requests: str  # a tenant's request topic that app-alpha may not write to

    def settings(self, user: str, password: str, *, mechanism: str = "SCRAM-SHA-512", **overrides: object) -> Settings:
        run = self.run
        values: dict[str, object] = {
            "kafka_bootstrap_servers": self.broker.bootstrap_servers, "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": mechanism, "kafka_sasl_username": user, "kafka_sasl_password": password,
            "kafka_ssl_ca_location": self.broker.ca_file, "kafka_fetch_max_wait_ms": 100,
            "consumer_group": f"workers-{run}", "usage_consumer_group": f"sink-{run}",
            "topic_requests": f"llm.requests.alpha-{run}", "topic_replies": f"llm.replies.alpha-{run}",
            "topic_usage": f"llm.usage.{run}", "topic_dlq": f"llm.requests.dlq.{run}",
            "topic_usage_dlq": f"llm.usage.dlq.{run}", "topic_alerts": f"llm.alerts.{run}",
            "usage_flush_interval_s": 0.2, "config_dir": REPO / "config", "provider_timeout_s": 10,
            "http_port": None,
        }
        return Settings(**{**values, **overrides})  # type: ignore[arg-type]


def _grant(broker: SecuredApacheKafka, principal: str, operations: list[str], topics: list[str],
           groups: list[str]) -> None:
    args = ["--add", "--allow-principal", f"User:{principal}"]
    args += [a for op in operations for a in ("--operation", op)]
    args += [a for t in topics for a in ("--topic", t)] + [a for g in groups for a in ("--group", g)]
    broker.acl(*args)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The secured broker, its topics (made by the super user) and the least-privilege ACLs."""
    broker = SecuredApacheKafka(tmp_path_factory.mktemp("kafka-sasl-ssl"),
                                users={"worker": WORKER_PW, "app-alpha": ALPHA_PW})
    broker.start(timeout_s=120)
    try:
        cluster = Cluster(broker, uuid.uuid4().hex[:8], f"llm.requests.beta-{uuid.uuid4().hex[:8]}")
        s = cluster.settings("worker", WORKER_PW)
        admin = broker.client_options()
        topics = [s.topic_requests, s.topic_replies, s.topic_usage, s.topic_dlq, s.topic_usage_dlq, s.topic_alerts,
                  cluster.beta_requests]
        asyncio.run(ensure_topics(admin, topics, partitions=1, max_message_bytes=s.record_limit_bytes))
        grants = [
            # The worker and its sink: read requests and usage in their groups, write everything they publish.
            ("worker", ["Read", "Describe"], [s.topic_requests, s.topic_usage], [s.consumer_group,
                                                                               s.usage_consumer_group]),
            ("worker", ["Write", "Describe"], [s.topic_replies, s.topic_dlq, s.topic_usage, s.topic_usage_dlq,
                                               s.topic_alerts], []),
            # Tenant alpha's application: write its request topic, read the reply topic (no group).
            ("app-alpha", ["Write", "Describe"], [s.topic_requests], []),
            ("app-alpha", ["Read", "Describe"], [s.topic_replies], []),
        ]
        with ThreadPoolExecutor(2) as pool:  # one JVM per call: two at a time on two cores
            list(pool.map(lambda g: _grant(broker, *g), grants))
        yield cluster
    finally:
        broker.stop()


@pytest.fixture
def chdb_settings(chdb_dir: Path) -> dict[str, object]:
    db = f"sec_{uuid.uuid4().hex[:8]}"
    return {"clickhouse_url": f"chdb://{chdb_dir}", "clickhouse_database": db}


async def test_worker_sink_and_client_work_as_least_privilege_principals(secured, simulator, chdb_settings,
                                                                         caplog) -> None:
    """Request -> reply through the worker, the usage row through the sink, all over SASL_SSL with
    SCRAM-SHA-512. The worker keeps create_topics on: its CREATE is refused (error 29) for topics
    that exist, and it carries on."""
    caplog.set_level(logging.INFO, "pipeline.transport.kafka")
    settings = secured.settings("worker", WORKER_PW, **chdb_settings)
    assert settings.create_topics
    worker = create_worker(settings, catalog=load_catalog(settings.config_dir))
    await worker.start()
    assert f"topic {settings.topic_requests} exists; user 'worker' may not create topics" in caplog.text
    try:
        async with PipelineClient(secured.settings("app-alpha", ALPHA_PW)) as client:
            reply = await client.complete(CompletionRequest(
                request_id=f"sec-{secured.run}", task_type="summarize", tenant="alpha",
                messages=[{"role": "user", "content": "over TLS, please"}]), timeout=30)
        assert reply.status == "ok", reply

        async def usage_stored() -> bool:
            assert worker.store is not None
            rows = await worker.store.query(
                f"SELECT request_id, status FROM {settings.clickhouse_database}.llm_usage FINAL")
            return (reply.request_id, "ok") in [tuple(r) for r in rows]

        await eventually(usage_stored, timeout_s=20)
    finally:
        await worker.stop()


async def test_a_topic_the_principal_may_not_create_fails_with_a_clear_error(secured) -> None:
    worker = secured.settings("worker", WORKER_PW)
    with pytest.raises(TopicAuthorizationFailedError, match=r"user 'worker' may not create topic 'llm\.nowhere'"):
        await asyncio.wait_for(ensure_topics(worker, ["llm.nowhere"], partitions=1), 20)


async def test_a_wrong_password_fails_fast_naming_authentication(secured) -> None:
    bad = secured.settings("worker", WRONG_PW, create_topics=False, clickhouse_url="chdb:///nonexistent/never-opened")
    worker = create_worker(bad, catalog=load_catalog(bad.config_dir), with_sink=False)
    sink = create_worker(bad, with_requests=False)
    client = PipelineClient(bad)
    for name, start in [
        ("worker", worker.start), ("sink", sink.start), ("client", client.start),
        ("topics", lambda: ensure_topics(bad, [bad.topic_requests], partitions=1)),
    ]:
        began = time.monotonic()
        with pytest.raises(KafkaConnectError) as caught:
            await asyncio.wait_for(start(), 20)
        assert time.monotonic() - began < 10, name
        assert caught.value.cause == "authentication", (name, caught.value)
        message = str(caught.value)
        assert "authentication failed for user 'worker' (SASL SCRAM-SHA-512)" in message, message
        assert "KAFKA_SASL_PASSWORD" in message and WRONG_PW not in message and WORKER_PW not in message


async def test_an_untrusted_ca_fails_fast_naming_the_certificate(secured) -> None:
    other_ca = secured.broker.other_ca_file
    bad = secured.settings("worker", WORKER_PW, kafka_ssl_ca_location=other_ca, create_topics=False)
    began = time.monotonic()
    with pytest.raises(KafkaConnectError) as caught:
        await asyncio.wait_for(PipelineClient(bad).start(), 20)
    assert time.monotonic() - began < 10
    assert caught.value.cause == "tls_untrusted"
    assert f"certificate is not trusted by KAFKA_SSL_CA_LOCATION={other_ca}" in str(caught.value)
    with pytest.raises(KafkaConnectError, match="certificate is not trusted"):
        await asyncio.wait_for(BrokerPublisher.from_settings(bad).start(), 20)


async def test_a_principal_without_write_acl_is_refused_by_the_broker(secured) -> None:
    """app-alpha may write its own request topic, not tenant beta's: the broker refuses."""
    alpha = secured.settings("app-alpha", ALPHA_PW)
    producer = kafka_producer(alpha, request_timeout_ms=5000)
    await producer.start()
    try:
        await producer.send_and_wait(alpha.topic_requests, b"{}")  # its own topic: allowed
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(producer.send_and_wait(secured.beta_requests, b"{}"), 20)
    finally:
        await producer.stop()
    publisher = BrokerPublisher.from_settings(alpha)
    await publisher.start()
    try:
        with pytest.raises(PublishRefused) as refused:
            await asyncio.wait_for(publisher.publish(secured.beta_requests, b"{}", key=None, headers={}), 20)
        assert refused.value.reason == "not_authorized"
    finally:
        await publisher.stop()


async def test_pipeline_check_over_sasl_ssl_never_prints_the_password(secured, tmp_path: Path) -> None:
    """PLAIN this time; the check passes with the right password, `pipeline run` with a wrong one
    stops naming authentication, and no output carries a password (the check logs at DEBUG)."""
    s = secured.settings("worker", WORKER_PW)
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "models.yaml").write_text("models:\n  m: {litellm_model: openai/gpt-4o-mini, api_base: 'http://127.0.0.1:9/v1'}\n")
    (cfg / "routing.yaml").write_text("default: {candidates: [m]}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "KAFKA_", "CLICKHOUSE_"))}
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "worker", "KAFKA_SASL_PASSWORD": WORKER_PW,
        "KAFKA_SSL_CA_LOCATION": str(secured.broker.ca_file), "PIPELINE_TOPIC_REQUESTS": s.topic_requests,
        "PIPELINE_TOPIC_REPLIES": s.topic_replies, "PIPELINE_CONFIG_DIR": str(cfg),
        "CLICKHOUSE_URL": f"chdb://{tmp_path / 'ch'}", "PIPELINE_LOG_LEVEL": "DEBUG",
    })

    async def cli(command: str, **extra: str) -> tuple[str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline.cli", command, env={**env, **extra},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        return out.decode(), err.decode()

    (good_out, good_err), (run_out, run_err) = await asyncio.gather(
        cli("check"), cli("run", KAFKA_SASL_PASSWORD=WRONG_PW))
    kafka_row = next(line for line in good_out.splitlines() if "kafka" in line)
    assert "OK" in kafka_row and "SASL_SSL, PLAIN as worker" in kafka_row, good_out + good_err
    assert "cannot connect to Kafka: authentication failed for user 'worker' (SASL PLAIN)" in " ".join(
        run_err.split()), run_err
    for text in (good_out, good_err, run_out, run_err):
        assert WORKER_PW not in text and WRONG_PW not in text
