"""Request features end to end: real Apache Kafka, the provider simulator through LiteLLM, chDB.

Streaming (chunk events rebuilding the reply; failures after the first chunk are in
test_stream_failover.py), tool
calls, structured output (retry, fallback, invalid_structured_output), prompt templates,
embeddings and the response cache, each through routing, budgets and usage accounting.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from pipeline.contracts.models import CompletionChunk, CompletionReply, ErrorCode
from tests.integration.kafka_helpers import (
    encode,
    eventually,
    produce,
    read_topic,
    request_doc,
)

pytestmark = pytest.mark.kafka

SENTIMENT = {"type": "object", "properties": {"sentiment": {"enum": ["positive", "neutral", "negative"]},
                                              "confidence": {"type": "number"}},
             "required": ["sentiment", "confidence"]}
LOOKUP_TOOL = {"type": "function", "function": {
    "name": "lookup_order", "description": "Find an order by id",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}}


async def send(settings: Any, docs: list[dict[str, Any]]) -> None:
    await produce(settings.kafka_bootstrap_servers, settings.topic_requests,
                  [(d["request_id"].encode(), encode(d)) for d in docs])


class ReplyTopic:
    """What the reply topic holds: final replies (with their records) and chunk events by request."""

    def __init__(self, records: list[Any]) -> None:
        self.replies: dict[str, CompletionReply] = {}
        self.records: dict[str, Any] = {}
        self.chunks: dict[str, list[tuple[int, int, CompletionChunk]]] = defaultdict(list)
        for r in records:
            doc = json.loads(r.value)
            if doc.get("type") == "chunk":
                self.chunks[doc["request_id"]].append((r.partition, r.offset, CompletionChunk.model_validate(doc)))
            else:
                reply = CompletionReply.model_validate(doc)
                self.replies[reply.request_id], self.records[reply.request_id] = reply, r


async def replies_and_chunks(settings: Any, count: int) -> tuple[dict[str, CompletionReply], ReplyTopic]:
    """Read the reply topic until it holds `count` final replies (chunks come with them)."""
    want = count
    while True:
        records = await read_topic(settings.kafka_bootstrap_servers, settings.topic_replies, count=want,
                                   timeout_s=30, settle_s=0.5)
        topic = ReplyTopic(records)
        if len(topic.replies) >= count or len(records) < want:
            return topic.replies, topic
        want = len(records) + (count - len(topic.replies))


async def usage_rows(worker: Any, request_id: str) -> list[tuple]:
    db = worker.settings.clickhouse_database
    return await worker.store.query(
        f"SELECT attempt, model, status, error_code, kind, streamed, cache_hit, ttft_ms, prompt_tokens, "
        f"completion_tokens, cost_usd FROM {db}.llm_usage FINAL WHERE request_id = %(r)s ORDER BY attempt",
        {"r": request_id})


async def test_a_streamed_answer_arrives_as_ordered_chunks_that_rebuild_the_reply(settings, start_worker, sim) -> None:
    await sim.configure(stream_chunk_words=2, stream_chunk_delay_ms=5)
    worker = await start_worker()
    tasks = {"st-openai": "summarize", "st-ollama": "classify", "st-anthropic": "extract"}
    await send(settings, [request_doc(rid, task, stream=True) for rid, task in tasks.items()])
    replies, topic = await replies_and_chunks(settings, len(tasks))
    for rid in tasks:
        reply = replies[rid]
        assert reply.status == "ok" and reply.content, reply.error
        mine = [c for c in topic.chunks[rid] if c[2].stream_id == reply.stream_id]
        assert len(mine) == reply.stream_chunks > 1  # several chunk events, then the reply
        final_record = topic.records[rid]
        assert {p for p, _, _ in mine} == {final_record.partition}  # one partition: the request's key
        assert [o for _, o, _ in mine] == sorted(o for _, o, _ in mine) and mine[-1][1] < final_record.offset
        assert [c.seq for _, _, c in mine] == list(range(len(mine)))
        assert "".join(c.delta for _, _, c in mine) == reply.content  # rebuilt exactly
        assert {c.model for _, _, c in mine} == {reply.model}
    rows = await eventually(lambda: usage_rows(worker, "st-anthropic"), timeout_s=30)
    (_attempt, model, status, _, kind, streamed, cache_hit, ttft, prompt, completion, cost) = rows[0]
    assert (model, status, kind, streamed, cache_hit) == ("sim-claude-haiku", "ok", "completion", True, False)
    assert ttft > 0 and prompt > 0 and completion > 0 and cost > 0  # usage and cost of a stream are known


async def test_a_stream_falls_back_before_its_first_chunk(settings, start_worker, sim) -> None:
    await sim.configure(stream_chunk_words=1, stream_chunk_delay_ms=5)
    await sim.set_rules([{"model": "gpt-4o-mini", "fault": "server_error", "status": 503, "times": 100}])
    await start_worker()
    await send(settings, [request_doc("fb-before", "summarize", stream=True)])
    replies, topic = await replies_and_chunks(settings, 1)
    reply = replies["fb-before"]
    assert reply.status == "ok" and reply.model == "sim-claude-haiku"  # summarize's fallback
    assert [a.model for a in reply.attempts][-1] == "sim-claude-haiku" and len(reply.attempts) >= 2
    assert {c.model for _, _, c in topic.chunks["fb-before"]} == {"sim-claude-haiku"}  # none from the failed model
    assert "".join(c.delta for _, _, c in topic.chunks["fb-before"]) == reply.content


async def test_tool_calls_pass_through_and_a_tool_result_gets_an_answer(settings, start_worker, sim) -> None:
    await start_worker()
    tasks = {"tool-openai": "summarize", "tool-ollama": "classify", "tool-anthropic": "extract"}
    await send(settings, [request_doc(rid, task, tools=[LOOKUP_TOOL], tool_choice="auto")
                          for rid, task in tasks.items()])
    replies, _ = await replies_and_chunks(settings, len(tasks))
    for rid in tasks:
        reply = replies[rid]
        assert reply.status == "ok", reply.error
        (call,) = reply.tool_calls or []
        assert call.function.name == "lookup_order" and isinstance(json.loads(call.function.arguments)["order_id"], str)
    first = replies["tool-openai"]
    assert first.finish_reason == "tool_calls"
    call = (first.tool_calls or [])[0]
    follow_up = request_doc("tool-openai-2", "summarize", tools=[LOOKUP_TOOL], messages=[
        {"role": "user", "content": "where is order 7?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"status": "shipped"}'},
    ])
    await send(settings, [follow_up])
    replies, _ = await replies_and_chunks(settings, len(tasks) + 1)
    answer = replies["tool-openai-2"]
    assert answer.status == "ok" and answer.content and not answer.tool_calls


async def test_structured_output_is_validated_retried_and_falls_back(settings, start_worker, sim) -> None:
    worker = await start_worker()
    fmt = {"type": "json_schema", "json_schema": {"name": "sentiment", "schema": SENTIMENT}}
    await send(settings, [request_doc("js-ok", "classify", response_format=fmt)])
    replies, _ = await replies_and_chunks(settings, 1)
    ok = replies["js-ok"]
    assert ok.status == "ok" and ok.model == "sim-llama", ok.error
    assert not list(Draft202012Validator(SENTIMENT).iter_errors(ok.parsed))
    assert json.loads(ok.content or "") == ok.parsed

    await sim.set_rules([{"model": "llama3.1", "fault": "invalid_json", "times": 1}])
    await send(settings, [request_doc("js-retry", "classify", response_format=fmt)])
    replies, _ = await replies_and_chunks(settings, 2)
    assert [a.model for a in replies["js-retry"].attempts] == ["sim-llama", "sim-llama"]  # once more, same model
    assert replies["js-retry"].status == "ok"

    await sim.set_rules([{"model": "llama3.1", "fault": "invalid_json"}])
    await send(settings, [request_doc("js-fallback", "classify", response_format=fmt)])
    replies, _ = await replies_and_chunks(settings, 3)
    fallback = replies["js-fallback"]
    assert [a.model for a in fallback.attempts] == ["sim-llama", "sim-llama", "sim-gpt-4o-mini"]
    assert fallback.status == "ok" and fallback.model == "sim-gpt-4o-mini"

    await sim.set_rules([{"model": "*", "fault": "invalid_json"}])
    await send(settings, [request_doc("js-bad", "classify", response_format=fmt)])
    replies, _ = await replies_and_chunks(settings, 4)
    bad = replies["js-bad"]
    assert bad.status == "error" and bad.error is not None
    assert bad.error.code == ErrorCode.INVALID_STRUCTURED_OUTPUT and "sentiment" in bad.error.message
    rows = await eventually(lambda: usage_rows(worker, "js-bad"), timeout_s=30)
    assert [(r[2], r[3]) for r in rows] == [("error", "invalid_structured_output")] * 4  # each refused answer counted


async def test_templates_render_and_bad_variables_get_named(settings, start_worker, sim) -> None:
    await start_worker()
    await send(settings, [
        request_doc("tpl-ok", "summarize", messages=None, template="summarize-ticket",
                    variables={"ticket": "Printer 7 is on fire", "language": "French"}),
        request_doc("tpl-missing", "summarize", messages=None, template="summarize-ticket",
                    variables={"language": "French", "tickt": "typo"}),
        request_doc("tpl-unknown", "summarize", messages=None, template="no-such-template"),
    ])
    replies, _ = await replies_and_chunks(settings, 3)
    assert replies["tpl-ok"].status == "ok", replies["tpl-ok"].error
    assert "Printer 7" in (replies["tpl-ok"].content or "")  # the simulator quotes the rendered user turn
    missing = replies["tpl-missing"].error
    assert missing is not None and missing.code == ErrorCode.TEMPLATE_VARIABLES
    assert "missing variable 'ticket'" in missing.message and "unknown variable 'tickt'" in missing.message
    unknown = replies["tpl-unknown"].error
    assert unknown is not None and unknown.code == ErrorCode.UNKNOWN_TEMPLATE and "summarize-ticket" in unknown.message


async def test_embeddings_are_routed_budgeted_and_recorded(settings, start_worker, sim) -> None:
    worker = await start_worker()
    texts = ["kafka is a log", "clickhouse is columnar", "kafka is a log"]
    await send(settings, [{"request_id": "emb-1", "task_type": "embed", "kind": "embedding", "input": texts,
                           "tenant": "acme"}])
    replies, _ = await replies_and_chunks(settings, 1)
    reply = replies["emb-1"]
    assert reply.status == "ok" and reply.model == "sim-embed-small", reply.error
    vectors = reply.embeddings or []
    assert len(vectors) == 3 and len({len(v) for v in vectors}) == 1 and vectors[0] == vectors[2] != vectors[1]
    assert reply.usage.prompt_tokens > 0 and reply.cost_usd > 0
    rows = await eventually(lambda: usage_rows(worker, "emb-1"), timeout_s=30)
    assert [(r[1], r[2], r[4]) for r in rows] == [("sim-embed-small", "ok", "embedding")]

    await sim.set_rules([{"model": "text-embedding-3-small", "fault": "server_error", "times": 100}])
    await send(settings, [{"request_id": "emb-2", "task_type": "embed", "kind": "embedding", "input": "one"}])
    replies, _ = await replies_and_chunks(settings, 2)
    assert replies["emb-2"].status == "ok" and replies["emb-2"].model == "sim-nomic-embed"  # the Ollama fallback
    assert len(replies["emb-2"].embeddings or []) == 1
    ours = [a for a in replies["emb-2"].attempts if a.model == "sim-embed-small"]
    theirs = [r for r in await sim.requests() if r["model"] == "text-embedding-3-small" and r["outcome"] != "ok"]
    assert len(theirs) == len(ours) >= 1  # every provider call is one of our attempts: no hidden SDK retries


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_the_response_cache_answers_repeats_for_free(settings, start_worker, sim, redis_url, backend) -> None:
    overrides: dict[str, Any] = {"response_cache": backend}
    if backend == "redis":
        overrides |= {"redis_url": redis_url, "redis_namespace": f"cache-{settings.consumer_group}"}
    worker = await start_worker(**overrides)
    await sim.clear_requests()
    same = {"messages": [{"role": "user", "content": "what is a partition?"}], "temperature": 0}
    await send(settings, [request_doc("c-1", "summarize", **same)])
    await replies_and_chunks(settings, 1)
    await send(settings, [request_doc("c-2", "summarize", **same),
                          request_doc("c-3", "summarize", cache=False, **same)])
    replies, _ = await replies_and_chunks(settings, 3)
    first, hit, opted_out = replies["c-1"], replies["c-2"], replies["c-3"]
    assert not first.cached and first.cost_usd > 0
    assert hit.cached and hit.cost_usd == 0 and hit.content == first.content and hit.status == "ok"
    assert not opted_out.cached and opted_out.cost_usd > 0
    assert len([r for r in await sim.requests() if r["kind"] == "chat"]) == 2  # c-2 never reached a provider
    rows = await eventually(lambda: usage_rows(worker, "c-2"), timeout_s=30)
    assert [(r[2], r[6], float(r[10])) for r in rows] == [("ok", True, 0.0)]
