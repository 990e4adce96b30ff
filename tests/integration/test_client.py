"""The client SDK against the real broker: many outstanding calls, isolation between clients,
timeouts, strays, safe re-publishing, the blocking wrapper, streaming, and the Node.js example."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError

from pipeline.client import (
    PipelineClient,
    ProcessResult,
    PublishError,
    ReplyTimeout,
    SyncPipelineClient,
)
from pipeline.contracts.models import CompletionChunk, CompletionReply, ReplyStatus
from tests.integration.kafka_helpers import encode, eventually, produce

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
NODE_EXAMPLE = REPO / "examples" / "node"


def ask(i: int | str) -> dict:
    return {"messages": [{"role": "user", "content": f"question {i}"}], "task_type": "summarize"}


async def test_a_thousand_concurrent_calls_each_get_their_own_reply(settings, start_worker, sim) -> None:
    await start_worker()
    async with PipelineClient(settings) as client:
        replies = await asyncio.gather(*(client.complete(request_id=f"many-{i}", timeout=180, **ask(i))
                                         for i in range(1000)))
        assert [r.request_id for r in replies] == [f"many-{i}" for i in range(1000)]
        assert all(r.status == ReplyStatus.OK and f"question {i}" in (r.content or "") for i, r in enumerate(replies))
        assert client.outstanding == 0


async def test_two_clients_in_parallel_get_only_their_own_replies(settings, start_worker, sim) -> None:
    await start_worker()
    async with PipelineClient(settings) as a, PipelineClient(settings) as b:
        got_a, got_b = await asyncio.gather(
            asyncio.gather(*(a.complete(request_id=f"a-{i}", timeout=120, **ask(f"a{i}")) for i in range(150))),
            asyncio.gather(*(b.complete(request_id=f"b-{i}", timeout=120, **ask(f"b{i}")) for i in range(150))),
        )
        assert {r.request_id for r in got_a} == {f"a-{i}" for i in range(150)}
        assert {r.request_id for r in got_b} == {f"b-{i}" for i in range(150)}
        # Each sees the other's 150 replies on the shared topic, and sets them aside (the last
        # of them may still be on their way to the other reader when its own calls are done).
        await eventually(lambda: _true(a.stray_replies >= 150 and b.stray_replies >= 150), timeout_s=30)


async def test_a_dedicated_reply_topic_sees_no_other_traffic(settings, start_worker, sim) -> None:
    await start_worker()
    own = f"{settings.topic_replies}.default.mine"  # under its tenant's reply topics (no tenant: "default")
    async with PipelineClient(settings, reply_topic=own, create_reply_topic=True) as mine, \
            PipelineClient(settings) as shared:
        ours, theirs = await asyncio.gather(
            asyncio.gather(*(mine.complete(timeout=60, **ask(i)) for i in range(20))),
            asyncio.gather(*(shared.complete(timeout=60, **ask(i)) for i in range(20))),
        )
        assert all(r.status == ReplyStatus.OK for r in [*ours, *theirs])
        assert mine.stray_replies == 0  # its topic carries its replies only


async def test_a_timeout_names_the_request_when_no_worker_runs(settings, start_worker, sim) -> None:
    worker = await start_worker()
    async with PipelineClient(settings) as client:
        assert (await client.complete(timeout=60, **ask(0))).status == ReplyStatus.OK
        await worker.stop()
        with pytest.raises(ReplyTimeout, match="no reply for request 'lonely-1' within 2s") as caught:
            await client.complete(request_id="lonely-1", timeout=2, **ask(1))
        assert caught.value.request_id == "lonely-1" and client.outstanding == 0


async def test_cancelling_a_call_leaves_nothing_behind(settings, start_worker, sim) -> None:
    await sim.configure(latency_ms=2000)
    await start_worker()
    async with PipelineClient(settings) as client:
        call = asyncio.create_task(client.complete(request_id="cancel-me", timeout=60, **ask(0)))
        await eventually(lambda: _true(client.published == 1), timeout_s=30)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert client.outstanding == 0
        await eventually(lambda: _true(client.stray_replies >= 1), timeout_s=30)  # its late reply: set aside


async def test_a_stray_reply_is_ignored_and_counted(settings, start_worker, sim) -> None:
    await start_worker()
    async with PipelineClient(settings) as client:
        pending = asyncio.create_task(client.complete(request_id="real-1", timeout=60, **ask(0)))
        stray = CompletionReply(request_id="nobody-asked", status=ReplyStatus.OK, content="?")
        await produce(settings.kafka_bootstrap_servers, settings.topic_replies,
                      [(b"x", stray.model_dump_json().encode()), (b"y", b"not json at all")])
        reply = await pending
        assert reply.request_id == "real-1" and reply.status == ReplyStatus.OK
        await eventually(lambda: _true(client.stray_replies >= 2), timeout_s=30)


async def test_a_failed_publish_is_retried_with_the_same_request_id(settings, start_worker, sim) -> None:
    await start_worker()
    await sim.clear_requests()
    async with PipelineClient(settings, publish_backoff_s=0.01) as client:
        real_send, sent_ids = client._producer.send_and_wait, []

        async def flaky(topic, value, **kw):
            sent_ids.append(json.loads(value)["request_id"])
            if len(sent_ids) == 1:
                raise KafkaConnectionError("the broker went away")
            return await real_send(topic, value, **kw)

        client._producer.send_and_wait = flaky  # type: ignore[method-assign]
        reply = await client.complete(request_id="retry-1", timeout=60, **ask(0))
        assert reply.status == ReplyStatus.OK and sent_ids == ["retry-1", "retry-1"]
        # Even when both sends had reached the broker, the pipeline answers once: same id, same reply.
        await real_send(settings.topic_requests, encode({"request_id": "retry-1", **ask(0)}), key=b"retry-1")
        await asyncio.sleep(1.0)
        calls = [r for r in await sim.requests() if r["kind"] == "chat"]
        assert len(calls) == 1

        async def down(topic, value, **kw):
            raise KafkaConnectionError("still down")

        client._producer.send_and_wait = down  # type: ignore[method-assign]
        with pytest.raises(PublishError, match="'retry-2' after 3 attempt"):
            await client.complete(request_id="retry-2", timeout=5, **ask(2))
        assert client.outstanding == 0


async def test_service_helpers_and_streaming(settings, start_worker, sim) -> None:
    await start_worker()
    async with PipelineClient(settings) as client:
        result = await client.process_text("Kafka is a log", "summarize")
        assert isinstance(result, ProcessResult) and result.ok and "Kafka is a log" in (result.content or "")
        assert result.model == "sim-gpt-4o-mini" and result.usage.total_tokens > 0 and result.finish_reason
        templated = await client.process_with_template("summarize-ticket", {"ticket": "Printer 7 is on fire"},
                                                       task_type="summarize")
        assert templated.ok and "Printer 7" in (templated.content or "")
        bad = await client.process_with_template("summarize-ticket", {}, task_type="summarize")
        assert not bad.ok and bad.error is not None and bad.error.code == "template_variables"
        events = [e async for e in client.stream(timeout=60, **ask("streamed"))]
        *chunks, reply = events
        assert isinstance(reply, CompletionReply) and all(isinstance(c, CompletionChunk) for c in chunks)
        assert "".join(c.delta for c in chunks) == reply.content and len(chunks) == reply.stream_chunks > 0


async def test_the_blocking_client(settings, start_worker, sim) -> None:
    await start_worker()

    def script() -> tuple[ProcessResult, CompletionReply, list]:  # what a notebook would do
        with SyncPipelineClient(settings) as client:
            result = client.process_text("hello from a script", "summarize")
            rid = client.submit(**ask("later"))
            later = client.wait_reply(rid, timeout=60)
            events = list(client.stream(**ask("sync stream")))
            return result, later, events

    result, later, events = await asyncio.to_thread(script)  # the worker keeps this test's loop
    assert result.ok and "hello from a script" in (result.content or "")
    assert later.status == ReplyStatus.OK
    assert isinstance(events[-1], CompletionReply) and events[-1].status == ReplyStatus.OK


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
async def test_the_node_example_round_trips(settings, start_worker, sim) -> None:
    assert (NODE_EXAMPLE / "node_modules" / "kafkajs").is_dir(), "run `npm ci` in examples/node (scripts/test.sh does)"
    await start_worker()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "PIPELINE_TOPIC_REQUESTS": settings.topic_requests, "PIPELINE_TOPIC_REPLIES": settings.topic_replies,
           "TIMEOUT_MS": "60000", "TENANT": "node"}
    proc = await asyncio.create_subprocess_exec(
        "node", "request-reply.mjs", "summarize", "Summarise: hello from Node", cwd=NODE_EXAMPLE, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    reply = CompletionReply.model_validate_json(out.decode().strip().splitlines()[-1])  # the published contract
    assert reply.status == ReplyStatus.OK and reply.request_id.startswith("node-")
    assert "hello from Node" in (reply.content or "") and reply.metadata == {"client": "node-example"}


async def _true(value: bool) -> bool:
    return value
