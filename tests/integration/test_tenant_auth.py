"""Authenticated tenants (PIPELINE_TENANT_AUTH) on the real broker and simulator: signed requests
(Python SDK and the Node example), and per-tenant topics consumed by pattern."""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from pipeline.client import PipelineClient
from pipeline.contracts.models import CompletionReply, ErrorCode, ReplyStatus
from pipeline.stages.authenticate import SIGNATURE_HEADER, sign
from pipeline.transport.kafka import ensure_topics
from tests.integration.kafka_helpers import encode, header, read_topic, request_doc

pytestmark = pytest.mark.kafka

NODE_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"


async def publish(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, dict[str, bytes]]]) -> None:
    """(key, value, headers) records, as a producer in any language would send them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send(topic, value, key=key, headers=list(headers.items()))
        await producer.flush()
    finally:
        await producer.stop()


def replies_by_id(records) -> dict[str, CompletionReply]:
    return {r.request_id: r for r in (CompletionReply.model_validate_json(x.value) for x in records)}


async def run_node_example(settings, tenant: str, key: str) -> CompletionReply:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "PIPELINE_TOPIC_REQUESTS": settings.topic_requests, "TIMEOUT_MS": "60000", "TENANT": tenant,
           "REPLY_TOPIC": f"{settings.topic_replies}.{tenant}", "PIPELINE_TENANT_SIGNING_KEY": key}
    proc = await asyncio.create_subprocess_exec(
        "node", "request-reply.mjs", "summarize", "Summarise: signed in Node", cwd=NODE_EXAMPLE, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, (out + err).decode()[-2000:]
    return CompletionReply.model_validate_json(out.decode().strip().splitlines()[-1])


async def test_signature_mode_serves_signed_requests_and_dead_letters_the_rest(
    settings, start_worker, sim, tmp_path
) -> None:
    keys = tmp_path / "tenant-keys"
    keys.mkdir()
    (keys / "acme").write_text("acme-key\n")
    (keys / "globex").write_text("globex-key\n")
    worker = await start_worker(tenant_auth="signature", tenant_keys_dir=keys)
    async with PipelineClient(settings, signing_key="acme-key") as client:  # the SDK signs what it publishes
        served = await client.complete(messages=[{"role": "user", "content": "hi"}], task_type="summarize",
                                       tenant="acme", timeout=30)
    assert served.status == ReplyStatus.OK
    assert len(await sim.requests()) == 1

    own_reply_topic = f"{settings.topic_replies}.globex"
    unsigned = encode(request_doc("unsigned", tenant="globex", reply_to=own_reply_topic))
    wrong = encode(request_doc("wrong-key", tenant="globex"))
    await publish(settings.kafka_bootstrap_servers, settings.topic_requests, [
        (b"k-unsigned", unsigned, {}),
        (b"k-wrong", wrong, {SIGNATURE_HEADER: sign(b"acme-key", b"k-wrong", wrong).encode()}),  # acme's key
    ])
    dlq = await read_topic(settings.kafka_bootstrap_servers, settings.topic_dlq, count=2, settle_s=0.5)
    assert {r.key: header(r, "dlq_reason") for r in dlq} == {b"k-unsigned": "unauthenticated",
                                                             b"k-wrong": "unauthenticated"}
    replies = replies_by_id(await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=3))
    for rid in ("unsigned", "wrong-key"):  # on the default reply topic, not the request's reply_to
        assert replies[rid].error is not None and replies[rid].error.code == ErrorCode.UNAUTHENTICATED
    assert len(await sim.requests()) == 1  # no provider call
    day = f"{datetime.now(UTC):%Y-%m-%d}"
    assert await worker.state.budgets.values([f"tenant=globex:daily:{day}"]) == [0]
    assert (await worker.state.budgets.values([f"tenant=acme:daily:{day}"]))[0] > 0

    if shutil.which("node") and (NODE_EXAMPLE / "node_modules" / "kafkajs").is_dir():  # the Node recipe agrees
        reply = await run_node_example(settings, "globex", "globex-key")
        assert reply.status == ReplyStatus.OK and "signed in Node" in (reply.content or "")
        assert len(await sim.requests()) == 2


async def test_topic_mode_takes_the_tenant_from_the_topic(settings, start_worker, sim, test_id) -> None:
    pattern = f"llm.tenant-requests.{test_id}.{{tenant}}"
    bootstrap = settings.kafka_bootstrap_servers
    await ensure_topics(settings, [pattern.format(tenant=t) for t in ("acme", "globex")], partitions=1)
    await start_worker(tenant_auth="topic", tenant_topic_pattern=pattern, kafka_metadata_max_age_ms=500)
    await publish(bootstrap, pattern.format(tenant="acme"), [
        (b"k1", encode(request_doc("no-tenant-field")), {}),                 # filled in from the topic
        (b"k2", encode(request_doc("claims-globex", tenant="globex")), {}),  # disagrees with the topic
    ])
    topic_client = settings.model_copy(update={"tenant_auth": "topic", "tenant_topic_pattern": pattern})
    async with PipelineClient(topic_client) as client:  # publishes to the tenant's own topic
        agreeing = await client.complete(messages=[{"role": "user", "content": "hi"}], task_type="summarize",
                                         tenant="globex", request_id="globex-own", timeout=30)
        assert agreeing.status == ReplyStatus.OK
        # A tenant onboarded while the worker runs: its topic is found at the next metadata refresh.
        await ensure_topics(settings, [pattern.format(tenant="initech")], partitions=1)
        late = await client.complete(messages=[{"role": "user", "content": "hi"}], task_type="summarize",
                                     tenant="initech", request_id="initech-late", timeout=45)
        assert late.status == ReplyStatus.OK
    replies = replies_by_id(await read_topic(bootstrap, settings.topic_replies, count=4))
    assert replies["no-tenant-field"].status == ReplyStatus.OK
    assert replies["claims-globex"].error is not None
    assert replies["claims-globex"].error.code == ErrorCode.UNAUTHENTICATED
    dead = await read_topic(bootstrap, settings.topic_dlq, count=1, settle_s=0.5)  # twice if the new topic's
    assert {(header(d, "dlq_reason"), header(d, "dlq_request_id")) for d in dead} == {  # rebalance came first
        ("unauthenticated", "claims-globex")}
    usage = [orjson.loads(r.value) for r in await read_topic(bootstrap, settings.topic_usage, count=3)]
    assert {u["request_id"]: u["tenant"] for u in usage} == {
        "no-tenant-field": "acme", "globex-own": "globex", "initech-late": "initech"}
    assert len(await sim.requests()) == 3
