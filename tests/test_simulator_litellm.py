"""Integration: the simulator on a real port, driven through LiteLLM's real provider code."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import litellm
import pytest
from litellm.exceptions import MidStreamFallbackError

from pipeline.contracts.models import ErrorCode
from pipeline.simulator import (
    FaultBook,
    FaultRule,
    ProviderSimulator,
    SimulatorClient,
    SimulatorConfig,
)
from pipeline.simulator.client import SyncSimulatorClient
from pipeline.transport.llm import classify

KEY = "sk-sim-SECRET-do-not-log"
SEED = 11
# provider -> (LiteLLM model string, api_base suffix, model name on the wire)
PROVIDERS: dict[str, tuple[str, str, str]] = {
    "openai": ("openai/gpt-4o-mini", "/v1", "gpt-4o-mini"),
    "anthropic": ("anthropic/claude-3-5-haiku-20241022", "", "claude-3-5-haiku-20241022"),
    "ollama": ("ollama/llama3.1", "", "llama3.1"),
    "ollama_chat": ("ollama_chat/llama3.1", "", "llama3.1"),
}
ALL = tuple(PROVIDERS)


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[ProviderSimulator]:
    async with ProviderSimulator(SimulatorConfig(seed=SEED)) as server:
        yield server


@pytest.fixture
async def ctl(sim: ProviderSimulator) -> AsyncIterator[SimulatorClient]:
    async with SimulatorClient(sim.url) as client:
        await client.clear_rules()
        await client.clear_requests()
        await client.configure(latency_ms=0, latency_jitter_ms=0, completion_tokens=16, prompt_tokens=None,
                               stream_chunk_words=2, stream_chunk_delay_ms=0, embedding_dimensions=8)
        yield client


async def complete(sim: ProviderSimulator, provider: str, text: str = "hello simulator", **kw: Any) -> Any:
    model, suffix, _ = PROVIDERS[provider]
    return await litellm.acompletion(
        model=model, api_base=sim.url + suffix, api_key=KEY, max_retries=0, num_retries=0,
        messages=[{"role": "user", "content": text}], **kw,
    )


@pytest.mark.parametrize("provider", ALL)
async def test_success_content_and_usage(sim: ProviderSimulator, ctl: SimulatorClient, provider: str) -> None:
    response = await complete(sim, provider, text="what is two plus two")
    (entry,) = await ctl.requests()
    content = response.choices[0].message.content
    assert content.startswith(f"sim reply from {PROVIDERS[provider][2]} to:") and "two plus two" in content
    assert len(content.split()) == 16
    assert response.usage.prompt_tokens == entry["prompt_tokens"] >= 1
    assert response.usage.completion_tokens == entry["completion_tokens"] == 16
    assert (entry["outcome"], entry["status"], entry["model"]) == ("ok", 200, PROVIDERS[provider][2])


@pytest.mark.parametrize("provider", ALL)
async def test_configured_token_counts(sim: ProviderSimulator, ctl: SimulatorClient, provider: str) -> None:
    await ctl.configure(prompt_tokens=123, completion_tokens=7)
    response = await complete(sim, provider)
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (123, 7)


# fault spec -> our error class, the same for every provider and every LiteLLM version: the class
# comes from the provider's own signal (status, body code/type, message), LiteLLM's exception
# class only where the provider said nothing (tests/unit/test_error_signals.py has the rules).
E = ErrorCode
EXPECTED: dict[str, ErrorCode] = {
    "rate_limit": E.RATE_LIMITED,
    "server_error": E.SERVER_ERROR,
    "server_error:503": E.SERVER_ERROR,
    "server_error:502": E.SERVER_ERROR,
    "context_length": E.CONTEXT_WINDOW_EXCEEDED,
    "auth": E.AUTH_ERROR,
    "bad_request": E.BAD_REQUEST,
    "content_policy": E.CONTENT_POLICY,
    "quota": E.QUOTA_EXCEEDED,
    "overloaded": E.SERVER_ERROR,
}
CASES = [(spec, p, code) for spec, code in EXPECTED.items() for p in ALL]


@pytest.mark.parametrize(("spec", "provider", "expected"), CASES, ids=[f"{s}-{p}" for s, p, _ in CASES])
async def test_fault_classified_by_the_providers_signal(
    sim: ProviderSimulator, ctl: SimulatorClient, spec: str, provider: str, expected: ErrorCode
) -> None:
    fault, _, status = spec.partition(":")
    rule = FaultRule(fault=fault, status=int(status or 500), retry_after_s=2.5)  # type: ignore[arg-type]
    await ctl.set_rules([rule])
    with pytest.raises(Exception) as info:
        await complete(sim, provider)
    error = classify(info.value, (KEY,))
    assert error.code is expected, f"{type(info.value).__name__}: {info.value}"
    assert KEY not in error.message
    (entry,) = await ctl.requests()
    assert entry["outcome"] == fault
    assert error.status == entry["status"]  # the provider's HTTP status, as sent
    if fault == "rate_limit":
        assert error.retry_after_s == 2.5


@pytest.mark.parametrize("provider", ALL)
async def test_malformed_body_is_a_retryable_class(sim: ProviderSimulator, ctl: SimulatorClient, provider: str) -> None:
    """A 200 whose body is not JSON: LiteLLM reports it differently per provider (InternalServerError on
    the OpenAI SDK path, APIConnectionError on the httpx paths); both are retried, neither stops."""
    await ctl.set_rules([FaultRule(fault="malformed")])
    with pytest.raises(Exception) as info:
        await complete(sim, provider)
    assert classify(info.value).code in (E.MALFORMED_RESPONSE, E.SERVER_ERROR, E.CONNECTION_ERROR)


@pytest.mark.parametrize("provider", ALL)
async def test_timeout_fault(sim: ProviderSimulator, ctl: SimulatorClient, provider: str) -> None:
    await ctl.set_rules([FaultRule(fault="timeout", hang_s=5)])
    started = time.perf_counter()
    with pytest.raises(litellm.Timeout):
        await complete(sim, provider, timeout=0.5)
    # Cut by the client's 0.5 s timeout: not before it, and long before the 5 s hang ends.
    assert 0.45 <= time.perf_counter() - started < 2
    (entry,) = await ctl.requests()
    assert entry["outcome"] == "timeout" and entry["latency_ms"] >= 5000


@pytest.mark.parametrize("provider", ALL)
async def test_timeout_fault_answers_after_hang(sim: ProviderSimulator, ctl: SimulatorClient, provider: str) -> None:
    """A hang shorter than the client's timeout delays the answer by at least `hang_s`, then it
    arrives in full."""
    hang_s = 0.5
    await complete(sim, provider)  # warm up: a provider's first call through LiteLLM can take ~1 s by itself
    await ctl.clear_requests()
    await ctl.set_rules([FaultRule(fault="timeout", hang_s=hang_s)])
    started = time.perf_counter()
    response = await complete(sim, provider, timeout=5)
    assert time.perf_counter() - started >= hang_s  # the simulator held the answer back that long
    assert response.usage.completion_tokens == 16
    (entry,) = await ctl.requests()
    assert entry["outcome"] == "timeout" and entry["latency_ms"] >= hang_s * 1000


async def test_times_budget(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    await ctl.set_rules([FaultRule(model="gpt-*", fault="server_error", times=2)])
    for _ in range(2):
        with pytest.raises(litellm.InternalServerError):
            await complete(sim, "openai")
    await complete(sim, "openai")
    await complete(sim, "anthropic")  # glob does not match: never faulted
    assert [e["outcome"] for e in await ctl.requests()] == ["server_error", "server_error", "ok", "ok"]
    assert (await ctl.rules())[0]["fired"] == 2


async def test_probability_is_reproducible(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    rule = FaultRule(fault="server_error", probability=0.5)
    await ctl.set_rules([rule])  # replacing rules re-seeds the server's RNG
    observed = []
    for _ in range(16):
        try:
            await complete(sim, "ollama_chat")
            observed.append("ok")
        except litellm.InternalServerError:
            observed.append("server_error")
    book = FaultBook([rule], seed=SEED)
    assert observed == [book.decide("llama3.1", "ollama").outcome for _ in range(16)]
    assert 0 < observed.count("server_error") < 16


async def test_latency_config_and_latency_only_rule(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    await ctl.configure(latency_ms=100, latency_jitter_ms=50)
    await ctl.add_rule(FaultRule(model="llama*", latency_ms=100))
    started = time.perf_counter()
    await complete(sim, "ollama_chat")
    assert time.perf_counter() - started >= 0.2
    (entry,) = await ctl.requests()
    assert entry["outcome"] == "ok" and 200 <= entry["latency_ms"] <= 250


async def test_request_log_headers_user_and_no_secrets(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    headers = {"x-pipeline-request-id": "req-42"}
    await complete(sim, "openai", user="u-1", extra_headers=headers)
    await complete(sim, "anthropic", extra_headers=headers)
    await ctl.set_rules([FaultRule(fault="auth")])
    with pytest.raises(litellm.AuthenticationError):
        await complete(sim, "ollama_chat", extra_headers=headers)
    log = await ctl.requests()
    assert [e["seq"] for e in log] == sorted(e["seq"] for e in log) and len(log) == 3
    assert all(e["headers_subset"]["x-pipeline-request-id"] == "req-42" for e in log)
    assert all(e["key_present"] for e in log)
    assert log[0]["user"] == "u-1"
    assert log[1]["headers_subset"]["anthropic-version"]
    assert KEY not in json.dumps(log)
    assert await ctl.requests(since=log[1]["seq"]) == log[2:]
    stats = await ctl.stats()
    assert stats["total"] == 3 and stats["by_model"]["llama3.1"] == {"auth": 1}


async def test_control_api_validation_and_listing(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as http:
        assert (await http.get("/health")).json()["status"] == "ok"
        assert "gpt-4o-mini" in [m["id"] for m in (await http.get("/v1/models")).json()["data"]]
        assert "llama3.1" in [m["name"] for m in (await http.get("/api/tags")).json()["models"]]
        assert (await http.put("/_sim/rules", json={"rules": [{"fault": "nope"}]})).status_code == 400
        assert (await http.get("/_sim/requests", params={"since": "x"})).status_code == 400
    with pytest.raises(httpx.HTTPStatusError):
        await ctl.configure(seed=3)
    with pytest.raises(httpx.HTTPStatusError):
        await ctl.configure(completion_tokens=0)


def _sync_roundtrip(url: str) -> list[dict[str, Any]]:
    with SyncSimulatorClient(url) as client:
        client.set_rules([{"model": "x*", "fault": "auth", "times": 1}])
        client.add_rule(FaultRule(fault="rate_limit"))
        client.configure(latency_ms=0)
        assert client.stats()["total"] == 0
        rules = client.rules()
        client.clear_rules()
        return rules


async def test_sync_client(sim: ProviderSimulator, ctl: SimulatorClient) -> None:
    rules = await asyncio.to_thread(_sync_roundtrip, sim.url)
    assert [r["fault"] for r in rules] == ["auth", "rate_limit"]
    assert await ctl.rules() == []


async def test_serve_prints_url_and_stops_on_sigterm() -> None:
    code = "from pipeline.simulator import serve, SimulatorConfig; serve('127.0.0.1', 0, SimulatorConfig())"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()
        assert line.startswith("simulator listening on http://127.0.0.1:")
        async with httpx.AsyncClient() as http:
            assert (await http.get(line.rsplit(" ", 1)[1] + "/health")).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()


# --------------------------------------------------------------------------- streaming, tools, JSON, embeddings

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "city name"},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "hourly": {"type": "boolean"},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Forecast for a city.",
                                                 "parameters": WEATHER_SCHEMA}}
TIME_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}
OTHER_TOOL = {"type": "function", "function": {"name": "get_time", "description": "Local time.",
                                               "parameters": TIME_SCHEMA}}
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 3},
        # No "maximum": LiteLLM strips numeric/length/array bounds from Anthropic ``output_format``
        # schemas, so the simulator (like Claude) never sees them; 1.5 would break ``maximum: 1``.
        "score": {"type": "number", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "verdict": {"type": "string", "enum": ["yes", "no"]},
        "meta": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    },
    "required": ["title", "score", "tags", "verdict", "meta"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True}}
# Where LiteLLM 1.106 sends tools / JSON: Ollama's /api/generate takes neither tools nor tool_choice.
TOOL_PROVIDERS = ("openai", "anthropic", "ollama_chat")
# claude-haiku-4-5 has native structured output in LiteLLM's model map: response_format becomes
# ``output_format``; claude-3-5-haiku does not, so it becomes a forced ``json_tool_call`` tool.
JSON_MODELS: dict[str, tuple[str, str]] = {
    "openai": ("openai/gpt-4o-mini", "/v1"),
    "anthropic-tool": ("anthropic/claude-3-5-haiku-20241022", ""),
    "anthropic-native": ("anthropic/claude-haiku-4-5", ""),
    "ollama": ("ollama/llama3.1", ""),
    "ollama_chat": ("ollama_chat/llama3.1", ""),
}


def conforms(text: str | None, schema: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(json.loads(text or ""), schema)
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False
    return True


async def collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


def streamed_text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def stream_usage(chunks: list[Any]) -> Any:
    """LiteLLM puts the provider's usage on the last chunk when ``include_usage`` is set."""
    return next(c.usage for c in reversed(chunks) if getattr(c, "usage", None))


@pytest.mark.parametrize("provider", ALL)
async def test_stream_rebuilds_the_reply_with_usage(
    sim: ProviderSimulator, ctl: SimulatorClient, provider: str
) -> None:
    plain = await complete(sim, provider, text="tell me a story")
    chunks = await collect(await complete(sim, provider, text="tell me a story", stream=True,
                                          stream_options={"include_usage": True}))
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 4
    assert streamed_text(chunks) == plain.choices[0].message.content
    usage = stream_usage(chunks)
    assert (usage.prompt_tokens, usage.completion_tokens) == (plain.usage.prompt_tokens, 16)
    built = litellm.stream_chunk_builder(chunks)
    assert built.choices[0].message.content == plain.choices[0].message.content
    assert built.usage.completion_tokens == 16
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    first, second = await ctl.requests()
    assert (first["stream"], second["stream"]) == (False, True) and second["outcome"] == "ok"


@pytest.mark.parametrize("provider", ["openai", "ollama_chat"])
async def test_stream_chunks_arrive_over_time(sim: ProviderSimulator, ctl: SimulatorClient, provider: str) -> None:
    await ctl.configure(stream_chunk_delay_ms=40, stream_chunk_words=4)
    arrivals = []
    async for chunk in await complete(sim, provider, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter())
    assert len(arrivals) == 4  # 16 words, 4 per chunk
    # Three 40 ms gaps between the first and the last chunk: 120 ms as sent. The client reads
    # through buffers that can merge a gap into its neighbour (98 ms was seen in CI), so the
    # bound is two gaps; chunks sent all at once arrive within a few milliseconds.
    assert arrivals[-1] - arrivals[0] >= 0.08


@pytest.mark.parametrize("provider", ALL)
async def test_stream_cut_raises_mid_stream(sim: ProviderSimulator, ctl: SimulatorClient, provider: str) -> None:
    await ctl.set_rules([FaultRule(fault="stream_cut", times=1)])
    response = await complete(sim, provider, stream=True)  # the 200 and the first chunks do arrive
    received: list[Any] = []
    with pytest.raises(Exception) as info:
        async for chunk in response:
            received.append(chunk)
    assert streamed_text(received), f"no content before {info.value!r}"
    # LiteLLM wraps a mid-stream failure so a Router could fall back, keeping what was generated.
    error = info.value
    assert isinstance(error, MidStreamFallbackError), repr(error)
    assert error.is_pre_first_chunk is False and error.generated_content == streamed_text(received)
    assert isinstance(error, litellm.ServiceUnavailableError)
    assert isinstance(error.original_exception, litellm.APIConnectionError)  # "Response payload is not completed"
    (entry,) = await ctl.requests()
    assert (entry["outcome"], entry["status"], entry["stream"]) == ("stream_cut", 200, True)


@pytest.mark.parametrize("provider", ALL)
async def test_stream_cut_truncates_a_plain_reply(sim: ProviderSimulator, ctl: SimulatorClient, provider: str) -> None:
    await ctl.set_rules([FaultRule(fault="stream_cut", times=1)])
    with pytest.raises(Exception) as info:
        await complete(sim, provider)
    # The body stops half way through its Content-Length: LiteLLM says InternalServerError (SDK path)
    # or APIConnectionError (httpx paths); either way a transient class that is retried.
    assert classify(info.value).code in (E.SERVER_ERROR, E.CONNECTION_ERROR, E.MALFORMED_RESPONSE), repr(info.value)
    assert (await complete(sim, provider)).choices[0].message.content.startswith("sim reply")


@pytest.mark.parametrize("provider", ALL)
async def test_stream_error_fault_raises_before_first_chunk(
    sim: ProviderSimulator, ctl: SimulatorClient, provider: str
) -> None:
    await ctl.set_rules([FaultRule(fault="rate_limit", times=1)])
    with pytest.raises(litellm.RateLimitError):
        stream = await complete(sim, provider, stream=True)
        await collect(stream)  # some providers only raise on the first read; none yields a chunk first
    chunks = await collect(await complete(sim, provider, stream=True))  # the fallback call
    assert streamed_text(chunks).startswith("sim reply")


@pytest.mark.parametrize("provider", TOOL_PROVIDERS)
async def test_tool_call_and_two_turn_loop(sim: ProviderSimulator, ctl: SimulatorClient, provider: str) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Oslo?"}]
    model, suffix, _ = PROVIDERS[provider]
    kw = {"model": model, "api_base": sim.url + suffix, "api_key": KEY, "max_retries": 0, "num_retries": 0,
          "tools": [WEATHER_TOOL, OTHER_TOOL]}
    first = await litellm.acompletion(messages=messages, **kw)
    (call,) = first.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and first.choices[0].finish_reason == "tool_calls"
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, WEATHER_SCHEMA)
    messages += [first.choices[0].message.model_dump(),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'}]
    second = await litellm.acompletion(messages=messages, **kw)
    assert not second.choices[0].message.tool_calls
    assert '{"temp_c": 21}' in second.choices[0].message.content


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_tool_choice_forced_and_none(sim: ProviderSimulator, ctl: SimulatorClient, provider: str) -> None:
    forced = await complete(sim, provider, tools=[WEATHER_TOOL, OTHER_TOOL],
                            tool_choice={"type": "function", "function": {"name": "get_time"}})
    (call,) = forced.choices[0].message.tool_calls
    assert call.function.name == "get_time" and json.loads(call.function.arguments) == {"tz": "sim tz"}
    plain = await complete(sim, provider, tools=[WEATHER_TOOL], tool_choice="none")
    assert not plain.choices[0].message.tool_calls and plain.choices[0].message.content.startswith("sim reply")


@pytest.mark.parametrize("provider", TOOL_PROVIDERS)
async def test_streamed_tool_call(sim: ProviderSimulator, ctl: SimulatorClient, provider: str) -> None:
    plain = await complete(sim, provider, tools=[WEATHER_TOOL])
    chunks = await collect(await complete(sim, provider, tools=[WEATHER_TOOL], stream=True))
    built = litellm.stream_chunk_builder(chunks)
    (call,) = built.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == json.loads(plain.choices[0].message.tool_calls[0].function.arguments)
    assert built.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("target", JSON_MODELS)
async def test_response_format_json_schema(sim: ProviderSimulator, ctl: SimulatorClient, target: str) -> None:
    model, suffix = JSON_MODELS[target]
    kw = {"model": model, "api_base": sim.url + suffix, "api_key": KEY, "max_retries": 0, "num_retries": 0,
          "messages": [{"role": "user", "content": "rate this"}], "response_format": RESPONSE_FORMAT}
    response = await litellm.acompletion(**kw)
    assert conforms(response.choices[0].message.content, ANSWER_SCHEMA), response.choices[0].message.content
    assert not response.choices[0].message.tool_calls
    await ctl.set_rules([FaultRule(fault="invalid_json", times=1)])
    broken = await litellm.acompletion(**kw)
    assert not conforms(broken.choices[0].message.content, ANSWER_SCHEMA)
    assert [e["outcome"] for e in await ctl.requests()] == ["ok", "invalid_json"]


@pytest.mark.parametrize("target", JSON_MODELS)
async def test_streamed_json_schema(sim: ProviderSimulator, ctl: SimulatorClient, target: str) -> None:
    model, suffix = JSON_MODELS[target]
    chunks = await collect(await litellm.acompletion(
        model=model, api_base=sim.url + suffix, api_key=KEY, num_retries=0, stream=True,
        messages=[{"role": "user", "content": "rate this"}], response_format=RESPONSE_FORMAT,
    ))
    assert conforms(streamed_text(chunks), ANSWER_SCHEMA), streamed_text(chunks)


@pytest.mark.parametrize("provider", ["openai", "ollama", "ollama_chat"])
async def test_response_format_json_object(sim: ProviderSimulator, ctl: SimulatorClient, provider: str) -> None:
    response = await complete(sim, provider, response_format={"type": "json_object"})
    answer = json.loads(response.choices[0].message.content)
    assert answer["answer"].startswith("sim reply")
    await ctl.set_rules([FaultRule(fault="invalid_json")])
    broken = await complete(sim, provider, response_format={"type": "json_object"})
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.choices[0].message.content)


@pytest.mark.parametrize("provider", TOOL_PROVIDERS)
async def test_invalid_json_breaks_tool_arguments(
    sim: ProviderSimulator, ctl: SimulatorClient, provider: str
) -> None:
    await ctl.set_rules([FaultRule(fault="invalid_json")])
    response = await complete(sim, provider, tools=[WEATHER_TOOL])
    args = json.loads(response.choices[0].message.tool_calls[0].function.arguments)
    assert "city" not in args
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(args, WEATHER_SCHEMA)


def vector_of(item: Any) -> list[float]:
    return item["embedding"] if isinstance(item, dict) else item.embedding


EMBEDDERS: dict[str, tuple[str, str]] = {
    "openai": ("openai/text-embedding-3-small", "/v1"),
    "ollama": ("ollama/nomic-embed-text", ""),
}


@pytest.mark.parametrize("provider", EMBEDDERS)
async def test_embeddings(sim: ProviderSimulator, ctl: SimulatorClient, provider: str,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    # LiteLLM 1.106 reads ``max_retries or DEFAULT_MAX_RETRIES`` for OpenAI embeddings, so
    # max_retries=0 alone still lets the SDK try three times; LiteLLMProvider sets the default to 0.
    monkeypatch.setattr(litellm, "DEFAULT_MAX_RETRIES", 0)
    model, suffix = EMBEDDERS[provider]
    kw = {"model": model, "api_base": sim.url + suffix, "api_key": KEY, "max_retries": 0, "num_retries": 0}
    response = await litellm.aembedding(input=["alpha", "beta", "alpha"], **kw)
    vectors = [vector_of(d) for d in response.data]
    assert [len(v) for v in vectors] == [8, 8, 8]
    assert vectors[0] == vectors[2] != vectors[1]
    assert all(abs(sum(x * x for x in v) - 1) < 1e-6 for v in vectors)
    assert response.usage.prompt_tokens >= 1
    single = await litellm.aembedding(input="alpha", dimensions=4, **kw)
    assert len(vector_of(single.data[0])) == 4
    await ctl.set_rules([FaultRule(fault="rate_limit", retry_after_s=0.01)])
    with pytest.raises(litellm.RateLimitError):
        await litellm.aembedding(input="alpha", **kw)
    log = await ctl.requests()
    expected = [("embedding", "ok")] * 2 + [("embedding", "rate_limit")]  # one call: retries are ours
    assert [(e["kind"], e["outcome"]) for e in log] == expected
    assert log[0]["path"] == {"openai": "/v1/embeddings", "ollama": "/api/embed"}[provider]
    # LiteLLM's Ollama embedding call sends no Authorization header at all.
    # LiteLLM sends the key to OpenAI; to Ollama only from 1.110 on (Ollama ignores it). Either way
    # the simulator records only whether one came, never the key itself.
    assert provider != "openai" or all(e["key_present"] for e in log)
    assert KEY not in json.dumps(log)
