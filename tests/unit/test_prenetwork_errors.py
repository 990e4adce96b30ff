"""Requests LiteLLM refuses before sending anything are bad requests, not connection errors.

The contract accepts any OpenAI-shaped content part and passes extra message keys (tool_calls,
tool_call_id) through; LiteLLM translates them into each provider's format before the network,
and a shape it cannot translate fails there with a KeyError / TypeError / ValueError / plain
Exception that its exception mapping labels APIConnectionError. Retried and counted toward
the deployment's cooldown as a connection error, one such request cost hundreds of attempts
with the provider healthy. The exceptions here are LiteLLM's own, raised by real calls to the
in-process provider simulator, whose request log proves whether anything reached it.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import AsyncIterator
from typing import Any

import litellm
import pytest

from pipeline.catalog.resilience import Resilience
from pipeline.contracts.models import CompletionRequest, ErrorCode
from pipeline.simulator import FaultRule, ProviderSimulator, SimulatorConfig
from pipeline.stages.retry import DEPLOYMENT_FAULTS, Action, decide
from pipeline.transport.error_signals import ProviderSignal, classify_signal
from pipeline.transport.llm import classify, rejected_before_sending
from pipeline.transport.provider import ProviderError

E = ErrorCode
KEY = "sk-prenet-SECRET-never-logged"
# wire format -> (LiteLLM model string, api_base suffix)
PROVIDERS: dict[str, tuple[str, str]] = {
    "openai": ("openai/gpt-4o-mini", "/v1"),
    "anthropic": ("anthropic/claude-3-5-haiku-20241022", ""),
    "ollama": ("ollama/llama3.1", ""),
    "ollama_chat": ("ollama_chat/llama3.1", ""),
}
ALL = tuple(PROVIDERS)
USER = {"role": "user", "content": "hi"}


def tool_turn(call: Any) -> list[dict[str, Any]]:
    """A tool-calling conversation whose assistant turn carries `call` as its one tool call."""
    return [USER, {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"}]


def call(**function: Any) -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": function}


# Shapes the contract accepts that LiteLLM (1.106) refuses before sending, per wire format, with
# what it raised: (LiteLLM's label, the error under it). All were `connection_error` before.
SHAPES: dict[str, list[dict[str, Any]]] = {
    # All formats: APIConnectionError <- Exception "Invalid user message at index 0"
    # (validate_chat_completion_user_messages)
    "unknown_part_type": [{"role": "user", "content": [{"type": "banana", "banana": "x"}]}],
    "part_without_type": [{"role": "user", "content": [{"text": "x"}]}],
    "part_type_null": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": None}]}],
    # ollama_chat: APIConnectionError <- TypeError (transform_request joining the text parts)
    "text_part_not_a_string": [{"role": "user", "content": [{"type": "text", "text": 5}]}],
    # ollama / ollama_chat: APIConnectionError <- KeyError 'function' (ollama_pt / transform_request)
    "tool_call_without_function": tool_turn({"id": "call_1", "type": "function"}),
    # ollama: APIConnectionError <- KeyError 'name' (ollama_pt)
    "tool_call_without_name": tool_turn(call(arguments="{}")),
    # ollama / ollama_chat: APIConnectionError <- JSONDecodeError (json.loads of the arguments)
    "tool_arguments_not_json": tool_turn(call(name="f", arguments="{not json")),
    # ollama / ollama_chat: APIConnectionError <- TypeError "the JSON object must be str" (arguments as an object)
    "tool_arguments_an_object": tool_turn(call(name="f", arguments={"a": 1})),
}
CASES: list[tuple[str, str]] = [
    *((shape, p) for shape in ("unknown_part_type", "part_without_type", "part_type_null") for p in ALL),
    ("text_part_not_a_string", "ollama_chat"),
    ("tool_call_without_function", "ollama"), ("tool_call_without_function", "ollama_chat"),
    ("tool_call_without_name", "ollama"),
    ("tool_arguments_not_json", "ollama"), ("tool_arguments_not_json", "ollama_chat"),
    ("tool_arguments_an_object", "ollama"), ("tool_arguments_an_object", "ollama_chat"),
]
# Already LiteLLM BadRequestErrors (bad_request before and after): Anthropic's own translation
# errors (AnthropicError <- KeyError / ValueError / IndexError) and Ollama's text-part checks.
ALREADY_BAD: list[tuple[str, list[dict[str, Any]], str]] = [
    ("tool_result_without_tool_call_id", [*tool_turn(call(name="f", arguments="{}"))[:2],
                                          {"role": "tool", "content": "42"}], "anthropic"),
    ("image_url_without_url", [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "anthropic"),
    ("image_url_not_a_data_url", [{"role": "user", "content": [{"type": "image_url",
                                                                 "image_url": {"url": "data:nonsense"}}]}],
     "anthropic"),
    ("tool_arguments_not_json", SHAPES["tool_arguments_not_json"], "anthropic"),
    ("text_part_not_a_string", SHAPES["text_part_not_a_string"], "ollama"),
]


@pytest.fixture(scope="module")
async def sim() -> AsyncIterator[ProviderSimulator]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm.suppress_debug_info = True
    async with ProviderSimulator(SimulatorConfig(seed=3, latency_ms=0)) as server:
        yield server


@pytest.fixture
def fresh(sim: ProviderSimulator) -> ProviderSimulator:
    sim.book.clear()
    sim.clear_requests()
    return sim


def contract_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as the worker sends them: validated by the contract, dumped like LiteLLMProvider does."""
    request = CompletionRequest.model_validate({"request_id": "r", "task_type": "t", "messages": messages})
    return [m.model_dump(exclude_none=True) for m in request.messages or ()]


async def raised(
    base: str, provider: str, messages: list[dict[str, Any]], *, stream: bool = False, timeout: float = 5.0
) -> BaseException:
    """What LiteLLM raises for this call (the test fails if it answers)."""
    model, suffix = PROVIDERS[provider]
    with pytest.raises(Exception) as info:
        response = await litellm.acompletion(model=model, api_base=base + suffix, api_key=KEY, max_retries=0,
                                             num_retries=0, timeout=timeout, messages=messages, stream=stream)
        if stream:
            async for _ in response:
                pass
    return info.value


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- the rule (no I/O)


@pytest.mark.parametrize("guess", [None, E.CONNECTION_ERROR, E.SERVER_ERROR, E.PROVIDER_ERROR, E.TIMEOUT,
                                   E.MALFORMED_RESPONSE, E.RATE_LIMITED, E.BAD_REQUEST])
def test_a_request_refused_before_the_network_is_a_bad_request(guess: ErrorCode | None) -> None:
    assert classify_signal(ProviderSignal(status=500, before_network=True), guess) is E.BAD_REQUEST


@pytest.mark.parametrize("guess", [E.AUTH_ERROR, E.CONTEXT_WINDOW_EXCEEDED, E.CONTENT_POLICY])
def test_a_request_side_verdict_the_library_reached_locally_stands(guess: ErrorCode) -> None:
    assert classify_signal(ProviderSignal(before_network=True), guess) is guess


def test_nothing_in_a_local_message_is_read_as_the_providers_words() -> None:
    """LiteLLM's message quotes the request's messages: their text is no provider body or phrase."""
    message = ('Invalid user message ... Received Messages=[{"error": {"code": "rate_limit_exceeded"}}] '
               "This model's maximum context length is 10 tokens")
    assert classify_signal(ProviderSignal(message=message, before_network=True), E.CONNECTION_ERROR) \
        is E.BAD_REQUEST
    assert classify_signal(ProviderSignal(message=message), E.CONNECTION_ERROR) is E.RATE_LIMITED  # when sent


def test_bad_request_stops_and_never_cools_a_deployment_down() -> None:
    error = ProviderError(E.BAD_REQUEST, "request rejected by LiteLLM before sending")
    assert decide(error, 0, Resilience(), random.Random(1)).action is Action.STOP
    assert E.BAD_REQUEST not in DEPLOYMENT_FAULTS
    assert E.CONNECTION_ERROR in DEPLOYMENT_FAULTS  # what these requests were counted as


# ---------------------------------------------------------------- LiteLLM's real exceptions


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("shape", "provider"), CASES, ids=[f"{s}-{p}" for s, p in CASES])
async def test_litellm_refusal_before_sending_is_bad_request(
    fresh: ProviderSimulator, shape: str, provider: str, stream: bool
) -> None:
    exc = await raised(fresh.url, provider, contract_messages(SHAPES[shape]), stream=stream)
    assert fresh.requests() == [], "the shape reached the provider: not a pre-network refusal"
    assert rejected_before_sending(exc), repr(exc)
    error = classify(exc, (KEY,))
    assert error.code is E.BAD_REQUEST, f"{type(exc).__name__}: {exc}"
    assert error.status is None and error.retry_after_s is None  # no provider said anything
    assert error.message.startswith("request rejected by LiteLLM before sending")
    assert "Traceback" not in error.message and KEY not in error.message
    assert decide(error, 0, Resilience(), random.Random(1)).action is Action.STOP


async def test_the_message_names_what_litellm_could_not_translate(fresh: ProviderSimulator) -> None:
    exc = await raised(fresh.url, "ollama", contract_messages(SHAPES["tool_call_without_function"]))
    assert isinstance(exc, litellm.APIConnectionError)  # LiteLLM's label: the reason for this module
    assert classify(exc).message == ("request rejected by LiteLLM before sending (raised as "
                                     "APIConnectionError): KeyError: 'function'")
    exc = await raised(fresh.url, "openai", contract_messages(SHAPES["unknown_part_type"]))
    assert "Invalid user message at index 0" in classify(exc).message


@pytest.mark.parametrize(("shape", "messages", "provider"), ALREADY_BAD, ids=[f"{s}-{p}" for s, _, p in ALREADY_BAD])
async def test_litellm_bad_request_errors_before_sending_stay_bad_request(
    fresh: ProviderSimulator, shape: str, messages: list[dict[str, Any]], provider: str
) -> None:
    exc = await raised(fresh.url, provider, contract_messages(messages))
    assert fresh.requests() == []
    assert isinstance(exc, litellm.BadRequestError)
    error = classify(exc, (KEY,))
    assert error.code is E.BAD_REQUEST and KEY not in error.message


async def test_a_bad_shape_against_a_closed_port_is_still_bad_request() -> None:
    """Where the call failed decides, not whether the provider was up: nothing was ever sent."""
    exc = await raised(f"http://127.0.0.1:{closed_port()}", "ollama", SHAPES["tool_call_without_function"])
    assert classify(exc).code is E.BAD_REQUEST


# ---------------------------------------------------------------- what must keep its class


@pytest.mark.parametrize("provider", ALL)
async def test_a_refused_connection_keeps_its_class(provider: str) -> None:
    exc = await raised(f"http://127.0.0.1:{closed_port()}", provider, [USER])
    assert not rejected_before_sending(exc)
    # LiteLLM labels a refused connection APIConnectionError (httpx paths) or InternalServerError
    # (the OpenAI SDK and Anthropic paths); both are retried and count toward the cooldown.
    assert classify(exc).code in (E.CONNECTION_ERROR, E.SERVER_ERROR), repr(exc)


@pytest.mark.parametrize("provider", ALL)
async def test_an_unresolvable_host_keeps_its_class(provider: str) -> None:
    exc = await raised("http://no-such-host.invalid", provider, [USER])  # RFC 6761: never resolves
    assert not rejected_before_sending(exc)
    assert classify(exc).code in (E.CONNECTION_ERROR, E.SERVER_ERROR, E.TIMEOUT), repr(exc)


@pytest.mark.parametrize("provider", ALL)
async def test_a_timeout_stays_a_timeout(fresh: ProviderSimulator, provider: str) -> None:
    fresh.book.set_rules([FaultRule(fault="timeout", hang_s=5)])
    exc = await raised(fresh.url, provider, [USER], timeout=0.3)
    assert not rejected_before_sending(exc)
    assert classify(exc).code is E.TIMEOUT


@pytest.mark.parametrize("fault", ["malformed", "stream_cut"])
@pytest.mark.parametrize("provider", ALL)
async def test_an_unreadable_answer_keeps_its_class(fresh: ProviderSimulator, provider: str, fault: str) -> None:
    """A 200 whose body is not JSON fails in LiteLLM with a JSONDecodeError too, but reading the
    answer (`transform_response`), after the request went out: a deployment fault, retried."""
    fresh.book.set_rules([FaultRule(fault=fault)])  # type: ignore[arg-type]
    exc = await raised(fresh.url, provider, [USER])
    assert [e["outcome"] for e in fresh.requests()] == [fault]
    assert not rejected_before_sending(exc)
    assert classify(exc).code in (E.MALFORMED_RESPONSE, E.SERVER_ERROR, E.CONNECTION_ERROR), repr(exc)


async def test_a_local_error_after_the_answer_arrived_keeps_its_class(fresh: ProviderSimulator) -> None:
    """LiteLLM's Ollama chat path counts the prompt's tokens after the answer arrives (even when the
    answer carries the count) and fails on content parts it cannot count: a ValueError raised in
    `transform_response`, after the request was sent. Not a pre-network refusal, so not reclassified."""
    messages = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]
    try:
        await litellm.acompletion(model="ollama_chat/llama3.1", api_base=fresh.url, api_key=KEY, max_retries=0,
                                  messages=contract_messages(messages), timeout=5)
    except Exception as exc:  # whatever LiteLLM raises is the subject
        assert len(fresh.requests()) == 1  # it did reach the provider
        assert not rejected_before_sending(exc)
        assert classify(exc).code is not E.BAD_REQUEST
    else:
        pytest.skip("this LiteLLM counts such content parts: nothing fails after the answer")
