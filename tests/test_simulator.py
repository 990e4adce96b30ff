"""The simulator's I/O-free parts (fault matching, wire shapes, replies, streams, schemas)
and its endpoints over raw HTTP (streaming, tools, JSON, embeddings, stream_cut)."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import pytest
from pydantic import ValidationError

from pipeline.simulator import (
    FaultBook,
    FaultRule,
    ProviderSimulator,
    SimulatorClient,
    SimulatorConfig,
    wire,
)
from pipeline.simulator import schema as schema_gen
from pipeline.simulator.reply import Reply, plan_reply, requested_json
from pipeline.simulator.stream import Frames, frames_for, split_text


def outcomes(book: FaultBook, n: int, model: str = "m", api: str = "openai") -> list[str]:
    return [book.decide(model, api).outcome for _ in range(n)]


def test_no_rules_means_ok() -> None:
    decision = FaultBook().decide("gpt-4o-mini", "openai")
    assert decision.fault is None and decision.outcome == "ok" and decision.rule_index is None


def test_glob_and_api_filter() -> None:
    book = FaultBook([FaultRule(model="gpt-*", api="openai", fault="auth")])
    assert book.decide("gpt-4o-mini", "openai").fault == "auth"
    assert book.decide("gpt-4o-mini", "anthropic").fault is None
    assert book.decide("claude-3", "openai").fault is None


def test_first_matching_rule_wins() -> None:
    book = FaultBook([FaultRule(model="llama*", fault="bad_request"), FaultRule(fault="server_error")])
    assert book.decide("llama3.1", "ollama").fault == "bad_request"
    assert book.decide("gpt-4o", "openai").fault == "server_error"
    assert book.fired == (1, 1)


def test_times_budget_then_falls_through() -> None:
    book = FaultBook([FaultRule(fault="rate_limit", times=2), FaultRule(fault="server_error", times=1)])
    assert outcomes(book, 5) == ["rate_limit", "rate_limit", "server_error", "ok", "ok"]


def test_times_zero_never_fires() -> None:
    assert outcomes(FaultBook([FaultRule(fault="auth", times=0)]), 3) == ["ok"] * 3


def test_budget_counts_only_matching_requests() -> None:
    book = FaultBook([FaultRule(model="a", fault="auth", times=1)])
    assert [book.decide(m, "openai").outcome for m in ("b", "b", "a", "a")] == ["ok", "ok", "auth", "ok"]


def test_probability_is_seeded_and_reproducible() -> None:
    rules = [FaultRule(fault="server_error", probability=0.3)]
    first = outcomes(FaultBook(rules, seed=7), 200)
    assert first == outcomes(FaultBook(rules, seed=7), 200)
    assert first != outcomes(FaultBook(rules, seed=8), 200)
    assert 40 <= first.count("server_error") <= 80


def test_probability_extremes() -> None:
    assert outcomes(FaultBook([FaultRule(fault="auth", probability=0.0)]), 50) == ["ok"] * 50
    assert outcomes(FaultBook([FaultRule(fault="auth", probability=1.0)]), 5) == ["auth"] * 5


def test_probability_miss_does_not_spend_budget_and_falls_through() -> None:
    book = FaultBook([FaultRule(fault="auth", probability=0.5, times=3), FaultRule(fault="bad_request")])
    result = outcomes(book, 40)
    assert result.count("auth") == 3
    assert result.count("bad_request") == 37


def test_set_rules_resets_counters_and_rng() -> None:
    rules = [FaultRule(fault="timeout", probability=0.5, times=5)]
    book = FaultBook(rules, seed=3)
    before = outcomes(book, 20)
    book.set_rules(rules)
    assert book.fired == (0,)
    assert outcomes(book, 20) == before


def test_add_rule_keeps_existing_counters() -> None:
    book = FaultBook([FaultRule(fault="auth", times=1)])
    book.decide("m", "openai")
    book.add_rule(FaultRule(fault="bad_request"))
    assert book.fired == (1, 0)
    assert book.decide("m", "openai").fault == "bad_request"
    book.clear()
    assert book.rules == () and book.decide("m", "openai").fault is None


def test_latency_only_rule() -> None:
    decision = FaultBook([FaultRule(model="slow-*", latency_ms=250)]).decide("slow-model", "ollama")
    assert decision.fault is None and decision.outcome == "ok"
    assert decision.extra_latency_ms == 250 and decision.rule_index == 0


def test_snapshot_reports_fired() -> None:
    book = FaultBook([FaultRule(fault="malformed", times=1)])
    book.decide("m", "anthropic")
    snap = book.snapshot()
    assert snap[0]["fault"] == "malformed" and snap[0]["fired"] == 1
    assert FaultRule.model_validate({k: v for k, v in snap[0].items() if k != "fired"}) == book.rules[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fault": "explode"},
        {"fault": "auth", "probability": 1.5},
        {"fault": "auth", "times": -1},
        {"fault": "server_error", "status": 404},
        {"api": "bedrock", "fault": "auth"},  # not a wire format the simulator speaks
        {},  # neither a fault nor latency: a no-op rule is a mistake
        {"fault": "auth", "unknown": 1},
    ],
)
def test_rule_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FaultRule.model_validate(kwargs)


def test_rule_is_frozen() -> None:
    rule = FaultRule(fault="auth")
    with pytest.raises(ValidationError):
        rule.fault = "timeout"  # type: ignore[misc]


def test_config_defaults_and_validation() -> None:
    cfg = SimulatorConfig()
    assert (cfg.latency_ms, cfg.completion_tokens, cfg.prompt_tokens, cfg.request_log_size) == (0, 16, None, 100_000)
    with pytest.raises(ValidationError):
        SimulatorConfig(completion_tokens=0)
    with pytest.raises(ValidationError):
        SimulatorConfig(latency_ms=-1)


# --------------------------------------------------------------------------- wire


def test_token_estimate_and_reply_text() -> None:
    assert wire.estimate_tokens([""]) == 1
    assert wire.estimate_tokens(["abcd", "e"]) == 2
    text = wire.reply_text("m", "hello world", 16)
    assert text.startswith("sim reply from m to: hello world") and len(text.split()) == 16
    assert wire.reply_text("m", "x" * 100, 16) == wire.reply_text("m", "x" * 100, 16)


def test_prompt_texts_per_api() -> None:
    body = {"system": "sys", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert wire.prompt_texts("anthropic", body) == ["sys", "hi"]
    assert wire.prompt_texts("ollama", {"prompt": "p", "system": "s"}) == ["s", "p"]
    assert wire.last_user_text("openai", {"messages": [{"role": "user", "content": "a"},
                                                       {"role": "assistant", "content": "b"}]}) == "a"


def test_success_bodies_carry_usage() -> None:
    oa = wire.success_body("openai", "/v1/chat/completions", "m", "c", 3, 5, seq=1, created=0)
    assert oa["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert oa["choices"][0]["finish_reason"] == "stop"
    an = wire.success_body("anthropic", "/v1/messages", "m", "c", 3, 5, seq=1, created=0)
    assert an["usage"] == {"input_tokens": 3, "output_tokens": 5} and an["stop_reason"] == "end_turn"
    gen = wire.success_body("ollama", "/api/generate", "m", "c", 3, 5, seq=1, created=0)
    chat = wire.success_body("ollama", "/api/chat", "m", "c", 3, 5, seq=1, created=0)
    assert gen["response"] == "c" and chat["message"]["content"] == "c"
    assert gen["done"] and chat["prompt_eval_count"] == 3 and chat["eval_count"] == 5


@pytest.mark.parametrize("api", ["openai", "anthropic", "ollama"])
def test_error_responses(api: str) -> None:
    status, _, headers = wire.error_response(api, "rate_limit", "m", prompt_tokens=1, retry_after_s=0.25)
    assert status == 429 and headers == {"retry-after": "0.25"}
    assert wire.error_response(api, "server_error", "m", prompt_tokens=1, status=503)[0] == 503
    assert wire.error_response(api, "auth", "m", prompt_tokens=1)[0] == 401
    for fault in ("context_length", "bad_request", "content_policy"):
        assert wire.error_response(api, fault, "m", prompt_tokens=1)[0] == 400  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        wire.error_response(api, "timeout", "m", prompt_tokens=1)


def test_quota_and_overloaded_as_each_provider_sends_them() -> None:
    status, body, _ = wire.error_response("openai", "quota", "m", prompt_tokens=1)
    assert status == 429 and body["error"]["code"] == body["error"]["type"] == "insufficient_quota"
    status, body, _ = wire.error_response("anthropic", "quota", "m", prompt_tokens=1)
    assert status == 400 and "credit balance is too low" in body["error"]["message"]
    assert wire.error_response("ollama", "quota", "m", prompt_tokens=1)[0] == 429
    status, body, _ = wire.error_response("anthropic", "overloaded", "m", prompt_tokens=1)
    assert status == 529 and body["error"]["type"] == "overloaded_error"
    assert wire.error_response("openai", "overloaded", "m", prompt_tokens=1)[0] == 503


def test_error_bodies_never_echo_keys_and_malformed_is_not_json() -> None:
    _, body, _ = wire.error_response("openai", "auth", "m", prompt_tokens=1)
    assert body["error"]["code"] == "invalid_api_key" and "sk-" not in json.dumps(body)
    with pytest.raises(json.JSONDecodeError):
        json.loads(wire.MALFORMED_BODY)


def test_new_config_fields_and_fault_kinds() -> None:
    cfg = SimulatorConfig()
    assert (cfg.stream_chunk_words, cfg.stream_chunk_delay_ms, cfg.embedding_dimensions) == (2, 0, 8)
    with pytest.raises(ValidationError):
        SimulatorConfig(stream_chunk_words=0)
    assert FaultRule(fault="stream_cut").fault == "stream_cut" and FaultRule(fault="invalid_json").fault
    for fault in ("stream_cut", "invalid_json"):
        with pytest.raises(ValueError):
            wire.error_response("openai", fault, "m", prompt_tokens=1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- schemas, replies, frames

SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a"]},
    {"type": "object", "properties": {"n": {"type": "number", "exclusiveMinimum": 2, "maximum": 9},
                                      "k": {"type": "integer", "minimum": 10}, "flag": {"type": "boolean"},
                                      "when": {"type": "string", "format": "date-time"},
                                      "code": {"type": "string", "minLength": 12, "maxLength": 12}},
     "required": ["n", "k", "flag", "when", "code"], "additionalProperties": False},
    {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"}, "minItems": 3,
                                                "uniqueItems": True}, "kind": {"enum": ["x", "y"]},
                                      "nested": {"type": "object", "properties": {"deep": {"type": "object",
                                                 "properties": {"deeper": {"type": "array",
                                                                           "items": {"type": "integer"}}}}}}},
     "required": ["items", "kind", "nested"]},
    {"$defs": {"Node": {"type": "object",
                        "properties": {"name": {"type": "string"},
                                       "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
                        "required": ["name", "children"]}},
     "type": "object", "properties": {"root": {"$ref": "#/$defs/Node"}}, "required": ["root"]},
    {"type": "object", "properties": {"maybe": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 5}]},
                                      "either": {"oneOf": [{"type": "string", "const": "fixed"}, {"type": "integer"}]},
                                      "both": {"allOf": [{"type": "object", "properties": {"p": {"type": "string"}},
                                                          "required": ["p"]},
                                                         {"properties": {"q": {"type": ["integer", "null"]}},
                                                          "required": ["q"]}]}},
     "required": ["maybe", "either", "both"]},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_schema_instances_conform_and_invalid_ones_do_not(schema: dict[str, Any]) -> None:
    value = schema_gen.instance(schema)
    jsonschema.validate(value, schema)
    assert value == schema_gen.instance(schema)  # deterministic
    bad = schema_gen.invalid_instance(schema)
    assert bad[schema_gen.INVALID_MARKER] is True
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


@pytest.mark.parametrize("text", ["", "one", " lead and trail ", "a  b\n\tc", '{"a": [1, 2], "b": "x y"}'])
@pytest.mark.parametrize("words", [1, 2, 5])
def test_split_text_keeps_every_character(text: str, words: int) -> None:
    pieces = split_text(text, words)
    assert "".join(pieces) == text
    assert all(p for p in pieces)


TOOLS = [{"type": "function", "function": {"name": "first", "parameters": SCHEMAS[0]}},
         {"type": "function", "function": {"name": "second", "parameters": SCHEMAS[1]}}]
ANTHROPIC_TOOLS = [{"name": "first", "input_schema": SCHEMAS[0]}, {"name": "second", "input_schema": SCHEMAS[1]}]


def _plan(api: str, **body: Any) -> Reply:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return plan_reply(api, "m", body, 16, seq=7)


def test_plan_tool_choice_rules() -> None:
    assert _plan("openai", tools=TOOLS).tool_call.name == "first"  # type: ignore[union-attr]
    forced = _plan("openai", tools=TOOLS, tool_choice={"type": "function", "function": {"name": "second"}})
    assert forced.tool_call is not None and forced.content is None
    jsonschema.validate(forced.tool_call.arguments, SCHEMAS[1])
    assert _plan("openai", tools=TOOLS, tool_choice="none").tool_call is None
    assert _plan("ollama", tools=TOOLS, tool_choice="required").tool_call.name == "first"  # type: ignore[union-attr]
    assert _plan("anthropic", tools=ANTHROPIC_TOOLS, tool_choice={"type": "tool", "name": "second"}
                 ).tool_call.name == "second"  # type: ignore[union-attr]
    assert _plan("anthropic", tools=ANTHROPIC_TOOLS, tool_choice={"type": "none"}).tool_call is None
    assert _plan("ollama", prompt="p", tools=TOOLS).tool_call is None  # /api/generate has no tools


def test_plan_tool_result_ends_the_loop() -> None:
    openai_turn = [{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": []},
                   {"role": "tool", "tool_call_id": "c", "content": "RESULT-42"}]
    reply = _plan("openai", tools=TOOLS, messages=openai_turn)
    assert reply.tool_call is None and reply.content is not None and "RESULT-42" in reply.content
    anthropic_turn = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                    "content": [{"type": "text", "text": "RESULT-43"}]}]}]
    reply = _plan("anthropic", tools=ANTHROPIC_TOOLS, messages=anthropic_turn)
    assert reply.tool_call is None and "RESULT-43" in (reply.content or "")
    # LiteLLM's Anthropic JSON-mode tool is still called: it carries the structured answer.
    json_tool = [{"name": "json_tool_call", "input_schema": SCHEMAS[0]}]
    reply = _plan("anthropic", tools=json_tool, tool_choice={"type": "tool", "name": "json_tool_call"},
                  messages=anthropic_turn)
    assert reply.tool_call is not None and reply.tool_call.name == "json_tool_call"


def test_plan_json_per_api() -> None:
    schema = SCHEMAS[1]
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    cases: list[tuple[str, dict[str, Any]]] = [
        ("openai", {"response_format": rf}),
        ("ollama", {"format": schema}),
        ("anthropic", {"output_format": {"type": "json_schema", "schema": schema}}),
        ("anthropic", {"output_config": {"format": {"type": "json_schema", "schema": schema}}}),
    ]
    for api, extra in cases:
        assert requested_json(api, extra) == (True, schema)
        jsonschema.validate(json.loads(_plan(api, **extra).content or ""), schema)
        bad = plan_reply(api, "m", {"messages": [], **extra}, 16, seq=1, invalid_json=True)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(json.loads(bad.content or ""), schema)
    assert json.loads(_plan("openai", response_format={"type": "json_object"}).content or "")["answer"]
    assert json.loads(_plan("ollama", prompt="p", format="json").content or "")["answer"].startswith("sim reply")
    assert requested_json("openai", {"response_format": {"type": "text"}}) == (False, None)
    assert _plan("openai").content == wire.reply_text("m", "hi", 16)


def _sse_data(frames: tuple[bytes, ...]) -> list[Any]:
    out = []
    for frame in frames:
        for line in frame.decode().splitlines():
            if line.startswith("data: "):
                raw = line[len("data: "):]
                out.append(raw if raw == "[DONE]" else json.loads(raw))
    return out


def test_openai_frames_text_tool_and_cut() -> None:
    text = Reply("one two three four five")
    frames = frames_for("openai", "/v1/chat/completions", "m", text, 3, 5, seq=1, created=0, words=2,
                        include_usage=True)
    data = _sse_data(frames.complete())
    assert data[-1] == "[DONE]" and data[-2]["choices"] == [] and data[-2]["usage"]["total_tokens"] == 8
    assert "".join(d["choices"][0]["delta"].get("content") or "" for d in data[:-2]) == text.content
    assert data[-3]["choices"][0]["finish_reason"] == "stop"
    cut = _sse_data(frames.cut())
    assert len(cut) == 1 + 1 and "[DONE]" not in cut  # role chunk + half of 3 deltas
    call = plan_reply("openai", "m", {"messages": [], "tools": TOOLS}, 16, seq=2).tool_call
    assert call is not None
    data = _sse_data(frames_for("openai", "/v1/chat/completions", "m", Reply(None, call), 3, 5, seq=2, created=0,
                                words=2, include_usage=False).complete())
    args = "".join(d["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                   for d in data[:-1] if d["choices"][0]["delta"].get("tool_calls"))
    assert json.loads(args) == call.arguments and data[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_anthropic_and_ollama_frames() -> None:
    text = Reply("alpha beta gamma delta")
    frames = frames_for("anthropic", "/v1/messages", "m", text, 3, 5, seq=1, created=0, words=1, include_usage=False)
    events = _sse_data(frames.complete())
    assert [e["type"] for e in events][:3] == ["message_start", "content_block_start", "ping"]
    assert [e["type"] for e in events][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[0]["message"]["usage"]["input_tokens"] == 3 and events[-2]["usage"]["output_tokens"] == 5
    assert "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta") == text.content
    assert not any(b"message_stop" in f for f in frames.cut())
    for path, key in (("/api/chat", "message"), ("/api/generate", "response")):
        lines = [json.loads(f) for f in frames_for("ollama", path, "m", text, 3, 5, seq=1, created=0, words=3,
                                                   include_usage=False).complete()]
        assert [line["done"] for line in lines] == [False, False, True]
        pieces = [line[key]["content"] if key == "message" else line[key] for line in lines]
        assert "".join(pieces) == text.content and pieces[-1] == ""
        assert (lines[-1]["prompt_eval_count"], lines[-1]["eval_count"], lines[-1]["done_reason"]) == (3, 5, "stop")


def test_frames_cut_always_sends_a_delta() -> None:
    frames = Frames("x", (b"h",), (b"1",), (b"t",))
    assert frames.cut() == (b"h", b"1") and frames.complete() == (b"h", b"1", b"t")


def test_tool_call_bodies() -> None:
    call = wire.ToolCall("f", {"a": "x"}, seq=9)
    oa = wire.success_body("openai", "/v1/chat/completions", "m", None, 1, 2, seq=9, created=0, tool_call=call)
    assert oa["choices"][0]["finish_reason"] == "tool_calls" and oa["choices"][0]["message"]["content"] is None
    assert oa["choices"][0]["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a": "x"}'}
    an = wire.success_body("anthropic", "/v1/messages", "m", None, 1, 2, seq=9, created=0, tool_call=call)
    assert an["content"] == [{"type": "tool_use", "id": "toolu_sim_9", "name": "f", "input": {"a": "x"}}]
    assert an["stop_reason"] == "tool_use"
    ol = wire.success_body("ollama", "/api/chat", "m", None, 1, 2, seq=9, created=0, tool_call=call)
    assert ol["message"]["tool_calls"] == [{"function": {"name": "f", "arguments": {"a": "x"}}}]


def test_embedding_vectors() -> None:
    v8, v4 = wire.embedding_vector("hello", 8), wire.embedding_vector("hello", 4)
    assert v8 == wire.embedding_vector("hello", 8) != wire.embedding_vector("hellO", 8)
    assert abs(sum(x * x for x in v8) - 1) < 1e-9 and len(v4) == 4
    assert all((a > 0) == (b > 0) for a, b in zip(v4, v8, strict=False))  # a prefix, renormalised
    assert wire.embedding_inputs({"input": "a"}) == ["a"] and wire.embedding_inputs({"prompt": "p"}) == ["p"]
    assert wire.embedding_inputs({"input": ["a", "b"]}) == ["a", "b"]
    assert wire.embedding_inputs({"input": [1, 2]}) == ["[1, 2]"]


# --------------------------------------------------------------------------- raw HTTP against a live simulator

KEY = "sk-raw-http-SECRET"


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[ProviderSimulator]:
    async with ProviderSimulator(SimulatorConfig(seed=5)) as sim:
        yield sim


@pytest.fixture
async def http(server: ProviderSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with SimulatorClient(server.url) as ctl:
        await ctl.clear_rules()
        await ctl.clear_requests()
        await ctl.configure(latency_ms=0, latency_jitter_ms=0, completion_tokens=16, prompt_tokens=None,
                            stream_chunk_words=2, stream_chunk_delay_ms=0, embedding_dimensions=8)
    headers = {"authorization": f"Bearer {KEY}", "x-api-key": KEY}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as client:
        yield client


CHAT: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}),
    "anthropic": ("/v1/messages", {"model": "claude-x", "max_tokens": 50,
                                   "messages": [{"role": "user", "content": "hi there"}]}),
    "ollama_chat": ("/api/chat", {"model": "llama3.1", "messages": [{"role": "user", "content": "hi there"}]}),
    "ollama_generate": ("/api/generate", {"model": "llama3.1", "prompt": "hi there"}),
}


def _content(kind: str, body: dict[str, Any]) -> str:
    if kind == "openai":
        return body["choices"][0]["message"]["content"]
    if kind == "anthropic":
        return body["content"][0]["text"]
    return body["message"]["content"] if kind == "ollama_chat" else body["response"]


async def _stream_lines(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> tuple[httpx.Response, list[str]]:
    async with http.stream("POST", path, json=body) as response:
        return response, [line async for line in response.aiter_lines() if line]


def _deltas(kind: str, lines: list[str]) -> tuple[str, list[Any]]:
    """(concatenated text, parsed events) of a raw stream."""
    if kind.startswith("ollama"):
        events = [json.loads(line) for line in lines]
        key = "message" if kind == "ollama_chat" else "response"
        return "".join(e[key]["content"] if key == "message" else e[key] for e in events), events
    events = [line[6:] if line[6:] == "[DONE]" else json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    if kind == "openai":
        chunks = [e for e in events if e != "[DONE]" and e["choices"]]
        return "".join(e["choices"][0]["delta"].get("content") or "" for e in chunks), events
    return "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta"), events


@pytest.mark.parametrize("kind", CHAT)
async def test_http_stream_equals_non_stream(http: httpx.AsyncClient, server: ProviderSimulator, kind: str) -> None:
    path, body = CHAT[kind]
    plain = (await http.post(path, json=body)).json()
    response, lines = await _stream_lines(http, path, {**body, "stream": True,
                                                        "stream_options": {"include_usage": True}})
    text, events = _deltas(kind, lines)
    assert response.status_code == 200 and text == _content(kind, plain)
    assert response.headers["content-type"].startswith(
        "application/x-ndjson" if kind.startswith("ollama") else "text/event-stream")
    if kind == "openai":
        assert events[-1] == "[DONE]" and events[-2]["usage"]["completion_tokens"] == 16 and events[-2]["choices"] == []
        assert events[-3]["choices"][0]["finish_reason"] == "stop"
        assert len(events) == 1 + 8 + 3  # role chunk, 16 words two by two, finish, usage, [DONE]
    elif kind == "anthropic":
        assert events[-1]["type"] == "message_stop" and events[-2]["usage"]["output_tokens"] == 16
        assert events[0]["message"]["usage"]["input_tokens"] == plain["usage"]["input_tokens"]
    else:
        assert events[-1]["done"] is True and not any(e["done"] for e in events[:-1])
        assert events[-1]["eval_count"] == 16 and events[-1]["prompt_eval_count"] == plain["prompt_eval_count"]
    async with SimulatorClient(server.url) as ctl:
        log = await ctl.requests()
    assert [e["stream"] for e in log] == [False, True] and KEY not in json.dumps(log)


async def test_http_stream_chunk_delay_and_latency(http: httpx.AsyncClient, server: ProviderSimulator) -> None:
    async with SimulatorClient(server.url) as ctl:
        await ctl.configure(latency_ms=150, stream_chunk_delay_ms=30, stream_chunk_words=8)
    path, body = CHAT["ollama_chat"]
    started = time.perf_counter()
    arrivals = []
    async with http.stream("POST", path, json={**body, "stream": True}) as response:
        async for line in response.aiter_lines():
            if line:
                arrivals.append(time.perf_counter() - started)
    assert len(arrivals) == 3  # 16 words / 8, then the done line
    assert arrivals[0] >= 0.15  # latency comes before the first byte
    assert arrivals[-1] - arrivals[0] >= 0.05


@pytest.mark.parametrize("kind", CHAT)
async def test_http_stream_cut(http: httpx.AsyncClient, server: ProviderSimulator, kind: str) -> None:
    async with SimulatorClient(server.url) as ctl:
        await ctl.set_rules([FaultRule(fault="stream_cut", times=2)])
    path, body = CHAT[kind]
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with http.stream("POST", path, json={**body, "stream": True}) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line:
                    lines.append(line)
    text, events = _deltas(kind, lines)
    assert text and len(text.split()) < 16
    assert "[DONE]" not in lines and not any(isinstance(e, dict) and (e.get("done") or e.get("type") == "message_stop")
                                             for e in events)
    with pytest.raises(httpx.RemoteProtocolError):  # without streaming: a truncated body
        await http.post(path, json=body)
    async with SimulatorClient(server.url) as ctl:
        assert [(e["outcome"], e["status"]) for e in await ctl.requests()] == [("stream_cut", 200)] * 2
    assert (await http.post(path, json=body)).status_code == 200  # the server is fine afterwards


@pytest.mark.parametrize("kind", ["openai", "anthropic", "ollama_chat"])
async def test_http_error_fault_on_stream_answers_before_the_stream(
    http: httpx.AsyncClient, server: ProviderSimulator, kind: str
) -> None:
    async with SimulatorClient(server.url) as ctl:
        await ctl.set_rules([FaultRule(fault="server_error", status=503, times=1)])
    path, body = CHAT[kind]
    response = await http.post(path, json={**body, "stream": True})
    assert response.status_code == 503 and response.headers["content-type"].startswith("application/json")
    assert "error" in response.json()


async def test_http_tools_and_json(http: httpx.AsyncClient) -> None:
    messages = [{"role": "user", "content": "go"}]
    oa = (await http.post("/v1/chat/completions", json={"model": "m", "messages": messages, "tools": TOOLS})).json()
    (call,) = oa["choices"][0]["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function" and call["function"]["name"] == "first"
    jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS[0])
    an = (await http.post("/v1/messages", json={"model": "c", "max_tokens": 9, "messages": messages,
                                                "tools": ANTHROPIC_TOOLS})).json()
    assert an["stop_reason"] == "tool_use" and an["content"][0]["id"].startswith("toolu_")
    streamed, lines = await _stream_lines(http, "/v1/messages", {"model": "c", "max_tokens": 9, "messages": messages,
                                                                 "tools": ANTHROPIC_TOOLS, "stream": True})
    assert streamed.status_code == 200
    _, events = _deltas("anthropic", lines)
    partial = "".join(e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta")
    assert json.loads(partial) == an["content"][0]["input"]
    assert events[1]["content_block"]["type"] == "tool_use" and events[-2]["delta"]["stop_reason"] == "tool_use"
    ol_body = {"model": "l", "messages": messages, "tools": TOOLS, "format": "json"}
    ol = (await http.post("/api/chat", json=ol_body)).json()
    assert ol["message"]["tool_calls"][0]["function"]["arguments"] == an["content"][0]["input"]
    js = (await http.post("/api/generate", json={"model": "l", "prompt": "x", "format": SCHEMAS[2]})).json()
    jsonschema.validate(json.loads(js["response"]), SCHEMAS[2])


async def test_http_embeddings(http: httpx.AsyncClient, server: ProviderSimulator) -> None:
    one = (await http.post("/v1/embeddings", json={"model": "e", "input": "text"})).json()
    assert one["object"] == "list" and one["data"][0]["object"] == "embedding" and one["model"] == "e"
    assert len(one["data"][0]["embedding"]) == 8 and one["usage"]["prompt_tokens"] == one["usage"]["total_tokens"]
    many = (await http.post("/embeddings", json={"model": "e", "input": ["a", "text"], "dimensions": 3})).json()
    assert [d["index"] for d in many["data"]] == [0, 1] and len(many["data"][1]["embedding"]) == 3
    b64 = (await http.post("/v1/embeddings", json={"model": "e", "input": "text", "encoding_format": "base64"})).json()
    raw = base64.b64decode(b64["data"][0]["embedding"])
    assert list(struct.unpack("<8f", raw)) == pytest.approx(one["data"][0]["embedding"], rel=1e-6)
    embed = (await http.post("/api/embed", json={"model": "n", "input": ["text", "b"]})).json()
    assert embed["embeddings"][0] == one["data"][0]["embedding"] and embed["prompt_eval_count"] >= 1
    legacy = (await http.post("/api/embeddings", json={"model": "n", "prompt": "text"})).json()
    assert legacy["embedding"] == one["data"][0]["embedding"]
    async with SimulatorClient(server.url) as ctl:
        await ctl.configure(embedding_dimensions=16)
        await ctl.set_rules([FaultRule(model="bad-*", fault="server_error", status=502)])
        assert len((await http.post("/api/embed", json={"model": "n", "input": "z"})).json()["embeddings"][0]) == 16
        failed = await http.post("/v1/embeddings", json={"model": "bad-e", "input": "z"})
        assert failed.status_code == 502 and failed.json()["error"]["type"] == "server_error"
        log = await ctl.requests()
    assert [e["kind"] for e in log] == ["embedding"] * 7
    assert [e["outcome"] for e in log][-1] == "server_error" and all(e["completion_tokens"] == 0 for e in log)
    assert all(e["key_present"] for e in log) and KEY not in json.dumps(log)
