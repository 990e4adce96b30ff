"""Request features in the stages, with scripted providers (no I/O): capabilities, structured
output (retry once, fall back, then invalid_structured_output), the response cache, streaming
boundaries, embeddings in replies and usage rows, chunk publishing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from pipeline.catalog import load_catalog
from pipeline.contracts.models import (
    CompletionChunk,
    CompletionRequest,
    ErrorCode,
    ReplyStatus,
    ToolCall,
    ToolCallFunction,
)
from pipeline.stages.call import CallContext, call_with_fallback
from pipeline.stages.reply import build_reply, usage_events
from pipeline.stages.route import RoutePlan, RouteRefusal, plan_route
from pipeline.stages.structured import check_structured
from pipeline.state.response_cache import InProcessResponseCache
from pipeline.transport.provider import MockProvider, PartialUsage, ProviderError, ProviderResponse
from pipeline.transport.records import MemoryPublisher
from pipeline.worker.answer_cache import CachedAnswers, decode_answer, encode_answer
from pipeline.worker.chunks import ChunkPublisher

CATALOG = load_catalog(Path(__file__).resolve().parents[2] / "config")
SCHEMA = {"type": "object", "properties": {"sentiment": {"enum": ["positive", "negative"]}}, "required": ["sentiment"]}


def request(**kw: object) -> CompletionRequest:
    base = {"request_id": "r1", "task_type": "summarize", "messages": [{"role": "user", "content": "x"}]}
    return CompletionRequest.model_validate({**base, **kw})


def json_request(**kw: object) -> CompletionRequest:
    return request(response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": SCHEMA}}, **kw)


def answer(content: str | None, **kw: object) -> ProviderResponse:
    return ProviderResponse(content, 10, 5, **kw)


def test_request_shapes_are_checked() -> None:
    with pytest.raises(ValidationError, match="needs messages or template"):
        CompletionRequest.model_validate({"request_id": "r", "task_type": "t"})
    with pytest.raises(ValidationError, match="takes input only"):
        CompletionRequest.model_validate({"request_id": "r", "task_type": "t", "kind": "embedding", "input": "a",
                                          "messages": [{"role": "user", "content": "x"}]})
    # A usable inner schema is checked after the contract (no JSON Schema can state it): bad_request.
    bad_schema = request(response_format={"type": "json_schema", "json_schema": {"schema": {"type": "no-such-type"}}})
    assert "not a valid JSON Schema" in bad_schema.response_format.schema_problem()
    with pytest.raises(ValidationError, match="tool_choice needs tools"):
        request(tool_choice="auto")
    assert CompletionRequest.model_validate({"request_id": "r", "task_type": "t", "kind": "embedding",
                                             "input": "one text"}).input == ["one text"]


def test_request_features_add_required_capabilities() -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    plan = plan_route(request(task_type="extract", tools=tools), CATALOG)
    assert isinstance(plan, RoutePlan)
    assert all("tools" in c.spec.capabilities for c in plan.candidates)
    plan = plan_route(json_request(task_type="extract"), CATALOG)  # claude (listed first) lacks json_mode
    assert isinstance(plan, RoutePlan) and [c.spec.name for c in plan.candidates] == ["sim-gpt-4o-mini"]
    assert [(s.model, s.reason.value) for s in plan.skipped] == [("sim-claude-haiku", "missing_capability")]
    embed = CompletionRequest.model_validate({"request_id": "e", "task_type": "embed", "kind": "embedding",
                                              "input": ["a b c"]})
    plan = plan_route(embed, CATALOG)
    assert isinstance(plan, RoutePlan) and plan.candidates[0].spec.name == "sim-embed-small"
    assert plan.candidates[0].completion_tokens == 0 and plan.candidates[0].prompt_tokens > 0
    refusal = plan_route(embed.model_copy(update={"task_type": "summarize"}), CATALOG)
    assert isinstance(refusal, RouteRefusal) and refusal.code is ErrorCode.NO_ELIGIBLE_MODEL


def test_structured_check() -> None:
    fmt = json_request().response_format
    assert check_structured(fmt, '{"sentiment": "positive"}').parsed == {"sentiment": "positive"}
    assert "not JSON" in (check_structured(fmt, "positive").problem or "")
    assert "'sentiment' is a required property" in (check_structured(fmt, "{}").problem or "")
    obj = request(response_format={"type": "json_object"}).response_format
    assert check_structured(obj, "[1]").problem == "the answer is JSON list, not an object"
    assert check_structured(None, "anything").ok


async def test_invalid_structured_output_retries_once_then_errors() -> None:
    req = json_request()  # summarize: sim-gpt-4o-mini only (sim-claude-haiku lacks json_mode)
    plan = plan_route(req, CATALOG)
    assert isinstance(plan, RoutePlan) and [c.spec.name for c in plan.candidates] == ["sim-gpt-4o-mini"]
    provider = MockProvider.scripted(
        {"sim-gpt-4o-mini": [answer("nope"), answer("{}"), answer('{"sentiment": "negative"}')]})
    outcome = await call_with_fallback(req, plan, CallContext(provider, 5.0))
    assert provider.called == ["sim-gpt-4o-mini", "sim-gpt-4o-mini"]  # one retry on the same model, then no more
    reply = build_reply(req, plan, outcome, 1.0)
    assert reply.status is ReplyStatus.ERROR and reply.error is not None
    assert reply.error.code is ErrorCode.INVALID_STRUCTURED_OUTPUT
    assert "does not match schema 's'" in reply.error.message
    events = usage_events(req, plan, outcome)
    assert [e.status.value for e in events] == ["error", "error"]
    assert all(e.cost_usd > 0 and e.prompt_tokens == 10 for e in events)  # refused answers were still paid for


async def test_invalid_structured_output_falls_back_to_the_next_model() -> None:
    req = json_request(task_type="classify")  # sim-llama, then sim-gpt-4o-mini
    plan = plan_route(req, CATALOG)
    assert isinstance(plan, RoutePlan) and [c.spec.name for c in plan.candidates] == ["sim-llama", "sim-gpt-4o-mini"]
    provider = MockProvider.scripted(
        {"sim-llama": [answer("{}")], "sim-gpt-4o-mini": [answer('{"sentiment": "positive"}')]})
    outcome = await call_with_fallback(req, plan, CallContext(provider, 5.0))
    assert provider.called == ["sim-llama", "sim-llama", "sim-gpt-4o-mini"]
    reply = build_reply(req, plan, outcome, 1.0)
    assert reply.status is ReplyStatus.OK and reply.parsed == {"sentiment": "positive"}
    assert reply.model == "sim-gpt-4o-mini"


async def test_tool_calls_reach_the_reply_unvalidated_as_json() -> None:
    call = ToolCall(id="c1", function=ToolCallFunction(name="lookup", arguments='{"q": "x"}'))
    req = json_request(tools=[{"type": "function", "function": {"name": "lookup"}}])
    plan = plan_route(req, CATALOG)
    assert isinstance(plan, RoutePlan)
    provider = MockProvider.scripted({c.spec.name: [answer(None, tool_calls=(call,), finish_reason="tool_calls")]
                         for c in plan.candidates})
    outcome = await call_with_fallback(req, plan, CallContext(provider, 5.0))
    reply = build_reply(req, plan, outcome, 1.0)
    assert reply.status is ReplyStatus.OK and reply.tool_calls == [call] and reply.finish_reason == "tool_calls"


async def test_a_stream_broken_after_output_restarts_on_the_fallback_and_bills_the_delivered_tokens() -> None:
    req = request(stream=True)
    plan = plan_route(req, CATALOG)
    assert isinstance(plan, RoutePlan) and len(plan.candidates) == 2
    first, second = (c.spec.name for c in plan.candidates)
    broken = ProviderError(ErrorCode.STREAM_INTERRUPTED, "cut", after_output=True,
                           partial=PartialUsage(100, 40, estimated=True))
    provider = MockProvider.scripted({first: [broken], second: [answer("fine")]})
    publisher = MemoryPublisher()
    chunks = ChunkPublisher(publisher, "replies", b"k", req.request_id)
    await chunks(first, "partial ans")  # what the broken attempt had streamed

    outcome = await call_with_fallback(req, plan, CallContext(provider, 5.0, on_delta=chunks))
    assert provider.called == [first, first, second]  # one restart on the same model, then the fallback
    assert outcome.answer is not None and outcome.answer.spec.name == second
    broken_attempts = outcome.attempts[:2]
    assert all(a.cost_usd > 0 and a.billed_tokens == (100, 40, True) for a in broken_attempts)
    rows = usage_events(req, plan, outcome)
    assert [(r.status.value, r.completion_tokens, r.tokens_estimated) for r in rows] == [
        ("error", 40, True), ("error", 40, True), ("ok", 5, False)]
    reply = build_reply(req, plan, outcome, 1.0)
    assert reply.cost_usd == pytest.approx(sum(a.cost_usd for a in outcome.attempts))
    assert chunks.restarts == 1  # the first restart began a new stream; the second had sent nothing


async def test_a_restarted_stream_has_a_new_id_that_names_the_one_it_replaces() -> None:
    publisher = MemoryPublisher()
    chunks = ChunkPublisher(publisher, "replies", b"k", "r1")
    await chunks("m1", "half an ")
    old = chunks.stream_id
    await chunks.restart()
    await chunks.restart()  # nothing sent since: the same new stream
    await chunks("m2", "a whole answer")
    await chunks.close()
    events = [CompletionChunk.model_validate_json(v) for _, v, _, _ in publisher.on("replies")]
    assert [(e.stream_id == old, e.seq, e.replaces, e.delta) for e in events] == [
        (True, 0, None, "half an "), (False, 0, old, "a whole answer")]
    assert chunks.restarts == 1 and chunks.published == 1 and chunks.stream_id == events[1].stream_id


async def test_a_stream_failing_before_output_falls_back() -> None:
    req = request(stream=True)
    plan = plan_route(req, CATALOG)
    assert isinstance(plan, RoutePlan)
    first, second = (c.spec.name for c in plan.candidates)
    provider = MockProvider.scripted({first: [ProviderError(ErrorCode.AUTH_ERROR, "no key")], second: [answer("fine")]})

    async def sink(model: str, delta: str) -> None:
        return None

    outcome = await call_with_fallback(req, plan, CallContext(provider, 5.0, on_delta=sink))
    assert provider.called == [first, second] and outcome.answer is not None


async def test_cache_hit_costs_nothing_and_is_marked() -> None:
    cache = CachedAnswers(InProcessResponseCache(), ttl_s=60)
    req = request()
    plan = plan_route(req, CATALOG)
    assert isinstance(plan, RoutePlan)
    provider = MockProvider.scripted({c.spec.name: [answer("computed")] for c in plan.candidates})
    first = await call_with_fallback(req, plan, CallContext(provider, 5.0, cache=cache))
    second = await call_with_fallback(req.model_copy(update={"request_id": "r2"}), plan,
                                      CallContext(provider, 5.0, cache=cache))
    assert len(provider.called) == 1
    reply = build_reply(req, plan, second, 1.0)
    assert reply.cached and reply.content == "computed" and reply.cost_usd == 0
    (event,) = usage_events(req, plan, second)
    assert event.cache_hit and event.cost_usd == 0 and event.status.value == "ok"
    assert not build_reply(req, plan, first, 1.0).cached
    other = await call_with_fallback(request(temperature=0.5), plan, CallContext(provider, 5.0, cache=cache))
    assert len(provider.called) == 2 and not other.attempts[0].cache_hit  # a different request misses


def test_answer_cache_round_trip() -> None:
    call = ToolCall(id="c1", function=ToolCallFunction(name="f", arguments="{}"))
    original = ProviderResponse("text", 3, 4, "stop", tool_calls=(call,), embeddings=((0.5, -1.0),))
    assert decode_answer(encode_answer(original)) == original
    assert decode_answer(b"not json") is None and decode_answer(orjson.dumps({"v": 99})) is None


class Recorder:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.records: list[bytes] = []
        self.delay_s = delay_s

    async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str]) -> None:
        await asyncio.sleep(self.delay_s)
        self.records.append(value)


async def test_chunks_keep_order_and_coalesce_while_a_publish_is_in_flight() -> None:
    recorder = Recorder(delay_s=0.01)
    chunks = ChunkPublisher(recorder, "replies", b"k", "r1")
    words = [f"w{i} " for i in range(30)]
    for word in words:
        await chunks("sim-gpt-4o-mini", word)
        await asyncio.sleep(0.001)
    await chunks.close()
    parsed = [CompletionChunk.model_validate_json(v) for v in recorder.records]
    assert [c.seq for c in parsed] == list(range(len(parsed))) and chunks.published == len(parsed)
    assert "".join(c.delta for c in parsed) == "".join(words)
    assert 1 < len(parsed) < len(words)  # deltas gathered while the broker was busy
    assert {c.stream_id for c in parsed} == {chunks.stream_id} and parsed[0].model == "sim-gpt-4o-mini"


async def test_a_failed_chunk_publish_surfaces() -> None:
    class Failing(Recorder):
        async def publish(self, topic: str, value: bytes, *, key: bytes | None, headers: dict[str, str]) -> None:
            raise ConnectionError("broker down")

    chunks = ChunkPublisher(Failing(), "replies", b"k", "r1")
    await chunks("m", "a")
    with pytest.raises(ConnectionError):
        await chunks.close()


async def test_with_n_choices_every_choice_must_match_the_schema() -> None:
    from pipeline.contracts.models import ReplyChoice

    def choices(*contents: str) -> tuple[ReplyChoice, ...]:
        return tuple(ReplyChoice(index=i, content=c) for i, c in enumerate(contents))

    good, bad = '{"sentiment": "positive"}', "{}"
    req = json_request(task_type="classify", n=2)  # sim-llama, then sim-gpt-4o-mini
    plan = plan_route(req, CATALOG)
    assert isinstance(plan, RoutePlan)
    provider = MockProvider.scripted({
        "sim-llama": [answer(good, choices=choices(good, bad))] * 2,  # the second choice misses the schema
        "sim-gpt-4o-mini": [answer(good, choices=choices(good, '{"sentiment": "negative"}'))]})
    outcome = await call_with_fallback(req, plan, CallContext(provider, 5.0))
    assert provider.called == ["sim-llama", "sim-llama", "sim-gpt-4o-mini"]
    first_error = outcome.attempts[0].error
    assert first_error is not None and first_error.code is ErrorCode.INVALID_STRUCTURED_OUTPUT
    assert "choice 1: the answer does not match schema 's'" in first_error.message
    reply = build_reply(req, plan, outcome, 1.0)
    assert reply.status is ReplyStatus.OK and reply.parsed == {"sentiment": "positive"}
    assert [c.content for c in reply.choices or ()] == [good, '{"sentiment": "negative"}']
