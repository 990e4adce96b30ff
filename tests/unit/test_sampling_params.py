"""OpenAI chat parameters in the contract (ranges, cross-field rules, the unknown-field message),
on their way to the provider (the call stage with `MockProvider`; `LiteLLMProvider`'s arguments
with LiteLLM's call replaced), in the cache key, the route estimate, and `n` choices in the reply."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.catalog import load_catalog
from pipeline.catalog.models import ModelSpec
from pipeline.contracts.models import CompletionRequest, ErrorCode, ReplyChoice, ReplyStatus
from pipeline.stages.cache import cache_key
from pipeline.stages.call import CallContext, call_with_fallback
from pipeline.stages.reply import build_reply, usage_events
from pipeline.stages.route import RoutePlan, estimate, plan_route
from pipeline.stages.validate import Rejection, validate_request
from pipeline.transport.provider import MockProvider, ProviderError, ProviderResponse
from pipeline.worker.answer_cache import decode_answer, encode_answer

CATALOG = load_catalog(Path(__file__).resolve().parents[2] / "config")
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
ALL_PARAMS: dict[str, Any] = {
    "top_p": 0.9, "stop": ["END", "STOP"], "seed": 42, "presence_penalty": -1.5, "frequency_penalty": 2,
    "logit_bias": {"50256": -100, "1234": 5.5}, "logprobs": True, "top_logprobs": 3, "user": "end-user-7",
    "reasoning_effort": "low", "service_tier": "flex", "n": 3, "extra_body": {"top_k": 40, "guided": {"x": [1]}},
}


def doc(**kw: Any) -> dict[str, Any]:
    return {"request_id": "r1", "task_type": "summarize", "messages": [{"role": "user", "content": "x"}], **kw}


def request(**kw: Any) -> CompletionRequest:
    return CompletionRequest.model_validate(doc(**kw))


def verdict(**kw: Any) -> CompletionRequest | Rejection:
    """The worker's verdict on the request as bytes: the models and the published schema."""
    return validate_request(json.dumps(doc(**kw)).encode(), max_bytes=1 << 20, reply_topic_allowed=lambda _, __: True)


# --------------------------------------------------------------------------- the contract


def test_every_parameter_is_accepted_at_its_bounds() -> None:
    accepted = [
        {"top_p": 0}, {"top_p": 1}, {"stop": "\n"}, {"stop": ["a", "b", "c", "d"]}, {"seed": -(2**63)},
        {"seed": 2**63 - 1}, {"presence_penalty": -2}, {"frequency_penalty": 2}, {"logit_bias": {"0": -100}},
        {"logit_bias": {"9999999999": 100}}, {"logprobs": False}, {"logprobs": True, "top_logprobs": 0},
        {"logprobs": True, "top_logprobs": 20}, {"user": "u"}, {"tools": TOOLS, "parallel_tool_calls": False},
        *({"reasoning_effort": e} for e in ("minimal", "low", "medium", "high")),
        *({"service_tier": t} for t in ("auto", "default", "flex", "priority", "scale")),
        {"n": 1}, {"n": 8}, {"n": 1, "stream": True}, {"extra_body": {}}, {"extra_body": {"a": {"b": [1, None]}}},
        ALL_PARAMS,
    ]
    for params in accepted:
        result = verdict(**params)
        assert isinstance(result, CompletionRequest), (params, result)
        for name, value in params.items():
            assert name == "tools" or getattr(result, name) == value


@pytest.mark.parametrize(("params", "where", "says"), [
    ({"top_p": 1.01}, "top_p", "less than or equal to 1"),
    ({"top_p": -0.1}, "top_p", "greater than or equal to 0"),
    ({"stop": ""}, "stop", "at least 1 character"),
    ({"stop": []}, "stop", "at least 1 item"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4 items"),
    ({"stop": [1]}, "stop", "string"),
    ({"seed": 2**63}, "seed", "less than or equal to"),
    ({"seed": 1.5}, "seed", "integer"),
    ({"presence_penalty": -2.5}, "presence_penalty", "greater than or equal to -2"),
    ({"frequency_penalty": 2.5}, "frequency_penalty", "less than or equal to 2"),
    ({"logit_bias": {"12": 101}}, "logit_bias.12", "less than or equal to 100"),
    ({"logit_bias": {"12": -101}}, "logit_bias.12", "greater than or equal to -100"),
    ({"logit_bias": {"the": 1}}, "logit_bias.the", "pattern"),
    ({"logprobs": "yes"}, "logprobs", "is not valid"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "less than or equal to 20"),
    ({"top_logprobs": 2}, "<root>", "top_logprobs needs logprobs: true"),
    ({"logprobs": False, "top_logprobs": 2}, "<root>", "top_logprobs needs logprobs: true"),
    ({"user": ""}, "user", "at least 1 character"),
    ({"parallel_tool_calls": True}, "<root>", "parallel_tool_calls needs tools"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort", "'minimal', 'low', 'medium' or 'high'"),
    ({"service_tier": "gold"}, "service_tier", "'auto', 'default', 'flex', 'priority' or 'scale'"),
    ({"n": 0}, "n", "greater than or equal to 1"),
    ({"n": 9}, "n", "less than or equal to 8"),
    ({"n": 2, "stream": True}, "<root>", "n=2 cannot be streamed"),
    ({"extra_body": ["not", "an", "object"]}, "extra_body", "dictionary"),
])
def test_out_of_range_and_misplaced_parameters_are_refused_with_a_message(
    params: dict[str, Any], where: str, says: str,
) -> None:
    result = verdict(**params)  # the worker's verdict (the models, then the published schema): naming the field
    assert isinstance(result, Rejection) and result.code is ErrorCode.SCHEMA_INVALID
    assert result.detail.startswith(where), result.detail
    assert says in result.detail, result.detail


def test_unknown_top_level_fields_still_fail_and_are_named() -> None:
    result = verdict(top_k=40, best_of=2)
    assert isinstance(result, Rejection) and result.code is ErrorCode.SCHEMA_INVALID
    assert "top_k: Extra inputs are not permitted" in result.detail
    assert "best_of: Extra inputs are not permitted" in result.detail
    with pytest.raises(ValidationError, match="top_k"):
        request(top_k=40)


def test_the_published_schema_states_the_cross_field_rules() -> None:
    from pipeline.stages.validate import contract_validator

    validator = contract_validator()
    for bad in ({"top_logprobs": 1}, {"parallel_tool_calls": True}, {"n": 2, "stream": True}, {"logit_bias": {"x": 1}}):
        assert not validator.is_valid(doc(**bad)), bad
    for good in ({"logprobs": True, "top_logprobs": 1}, {"tools": TOOLS, "parallel_tool_calls": True},
                 {"n": 2}, {"n": 1, "stream": True}, {"logit_bias": {"1": 1}}):
        assert validator.is_valid(doc(**good)), good


# --------------------------------------------------------------------------- to the provider


async def test_the_call_stage_hands_the_provider_every_parameter() -> None:
    seen: list[CompletionRequest] = []

    def answer(call: Any) -> ProviderResponse:
        seen.append(call.request)
        return ProviderResponse("hi", 10, 5)

    req = request(**ALL_PARAMS, tools=TOOLS, parallel_tool_calls=False)
    plan = plan_route(req, CATALOG)
    assert isinstance(plan, RoutePlan)
    outcome = await call_with_fallback(req, plan, CallContext(MockProvider(answer), 5))
    assert outcome.answer is not None
    (got,) = seen
    for name, value in {**ALL_PARAMS, "parallel_tool_calls": False}.items():
        assert getattr(got, name) == value, name


class FakeLiteLLM:
    """Stands for `litellm.acompletion`: records its arguments, answers with n choices."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, **kwargs: Any) -> Any:
        import litellm

        self.calls.append(kwargs)
        n = kwargs.get("n") or 1
        return litellm.ModelResponse(
            choices=[{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": f"answer {i}"}}
                     for i in range(n)],
            usage={"prompt_tokens": 10, "completion_tokens": 7 * n, "total_tokens": 10 + 7 * n},
        )


def provider_with(fake: FakeLiteLLM) -> Any:
    from pipeline.transport.llm import LiteLLMProvider

    provider = LiteLLMProvider()
    provider._acompletion = fake  # type: ignore[assignment]
    return provider


def spec(litellm_model: str = "openai/gpt-4o-mini", **kw: Any) -> ModelSpec:
    return ModelSpec.model_validate({"name": "m", "litellm_model": litellm_model, "api_base": "http://sim/v1", **kw})


async def test_litellm_gets_the_parameters_under_their_own_names_and_drop_params_per_model() -> None:
    fake = FakeLiteLLM()
    provider = provider_with(fake)
    req = request(**ALL_PARAMS, tools=TOOLS, parallel_tool_calls=True, temperature=0.3, max_tokens=50)
    response = await provider.complete(spec().deployments[0], req, timeout_s=5)
    (kwargs,) = fake.calls
    expected = {k: v for k, v in ALL_PARAMS.items() if k != "extra_body"}
    assert {k: kwargs[k] for k in expected} == expected
    assert kwargs["extra_body"] == {"top_k": 40, "guided": {"x": [1]}}  # OpenAI-compatible: LiteLLM's extra_body
    assert kwargs["parallel_tool_calls"] is True and kwargs["temperature"] == 0.3 and kwargs["max_tokens"] == 50
    assert kwargs["drop_params"] is False  # strict unless the catalog says otherwise
    assert response.content == "answer 0" and response.completion_tokens == 21
    assert [(c.index, c.content) for c in response.choices] == [(0, "answer 0"), (1, "answer 1"), (2, "answer 2")]

    await provider.complete(spec(drop_params=True).deployments[0], request(), timeout_s=5)
    assert fake.calls[-1]["drop_params"] is True
    # A deployment inherits the model's setting, and may set its own.
    model = spec(drop_params=True, deployments=[{"id": "a"}, {"id": "b", "drop_params": False}])
    assert [d.drop_params for d in model.deployments] == [True, False]


async def test_unset_parameters_are_not_sent() -> None:
    fake = FakeLiteLLM()
    await provider_with(fake).complete(spec().deployments[0], request(), timeout_s=5)
    (kwargs,) = fake.calls
    from pipeline.transport.llm import SAMPLING_PARAMETERS

    assert not set(SAMPLING_PARAMETERS) & set(kwargs)
    assert "extra_body" not in kwargs and "parallel_tool_calls" not in kwargs


async def test_extra_body_for_other_providers_goes_in_the_body_but_never_sets_call_settings() -> None:
    fake = FakeLiteLLM()
    provider = provider_with(fake)
    anthropic = spec("anthropic/claude-haiku-4-5").deployments[0]
    await provider.complete(anthropic, request(extra_body={"top_k": 5}), timeout_s=5)
    assert fake.calls[-1]["top_k"] == 5 and "extra_body" not in fake.calls[-1]
    for hijack in ({"api_base": "http://elsewhere"}, {"api_key": "x"}, {"messages": []}, {"extra_headers": {}}):
        with pytest.raises(ProviderError) as info:
            await provider.complete(anthropic, request(extra_body=hijack), timeout_s=5)
        assert info.value.code is ErrorCode.BAD_REQUEST and next(iter(hijack)) in info.value.message
    assert len(fake.calls) == 1


def test_unsupported_params_error_is_a_bad_request_that_says_what_to_do() -> None:
    import litellm

    from pipeline.stages.retry import Action, decide
    from pipeline.transport.llm_errors import classify

    exc = litellm.UnsupportedParamsError(
        message="litellm.UnsupportedParamsError: anthropic does not support parameters: ['seed'], for "
                "model=claude-haiku-4-5. To drop these, set `litellm.drop_params=True` or for proxy: ...",
        llm_provider="anthropic", model="claude-haiku-4-5")
    error = classify(exc)
    assert error.code is ErrorCode.BAD_REQUEST and error.status == 400
    assert "does not support parameters: ['seed']" in error.message and "drop_params: true" in error.message
    assert "litellm.drop_params" not in error.message
    assert decide(error, 0, CATALOG.models["sim-claude-haiku"].resilience, random.Random(1)).action is Action.STOP


# --------------------------------------------------------------------------- n choices, priced


async def test_n_choices_reach_the_reply_and_every_choice_is_priced() -> None:
    choices = tuple(ReplyChoice(index=i, content=f"c{i}", finish_reason="stop") for i in range(2))
    provider = MockProvider.scripted({"sim-gpt-4o-mini": [ProviderResponse("c0", 100, 40, "stop", choices=choices)]})
    req = request(n=2, model="sim-gpt-4o-mini")
    plan = plan_route(req, CATALOG)
    assert isinstance(plan, RoutePlan)
    outcome = await call_with_fallback(req, plan, CallContext(provider, 5))
    reply = build_reply(req, plan, outcome, 1.0)
    assert reply.status is ReplyStatus.OK and reply.content == "c0"
    assert reply.choices is not None and [c.content for c in reply.choices] == ["c0", "c1"]
    assert reply.cost_usd == pytest.approx(100 * 0.15e-6 + 40 * 0.6e-6)  # 40: both choices' tokens
    (event,) = usage_events(req, plan, outcome)
    assert event.completion_tokens == 40 and event.cost_usd == pytest.approx(reply.cost_usd)
    single = MockProvider.scripted({"sim-gpt-4o-mini": [ProviderResponse("only", 10, 5, "stop")]})
    outcome = await call_with_fallback(request(), plan, CallContext(single, 5))
    assert build_reply(request(), plan, outcome, 1.0).choices is None  # a single-choice answer carries no list


def test_the_estimate_covers_every_choice_but_the_context_window_one() -> None:
    model = CATALOG.models["sim-gpt-4o-mini"]
    single, triple = estimate(model, request(max_tokens=100), 512), estimate(model, request(max_tokens=100, n=3), 512)
    assert (single.completion_tokens, triple.completion_tokens) == (100, 300)
    assert triple.tokens_per_choice == 100 and triple.choices == 3
    assert triple.estimated_cost_usd > single.estimated_cost_usd


def test_sampling_parameters_are_part_of_the_cache_key_and_choices_survive_the_cache() -> None:
    keys = {cache_key("m", request(**p)) for p in ({}, {"top_p": 0.5}, {"seed": 1}, {"seed": 2}, {"n": 2},
                                                       {"stop": "x"}, {"extra_body": {"a": 1}}, {"user": "u"})}
    assert len(keys) == 8
    choices = (ReplyChoice(index=0, content="a"), ReplyChoice(index=1, content="b"))
    logprobs = {"content": [{"token": "a", "logprob": -0.1, "top_logprobs": []}]}
    decoded = decode_answer(encode_answer(ProviderResponse("a", 1, 2, choices=choices, logprobs=logprobs)))
    assert decoded is not None and decoded.choices == choices and decoded.logprobs == logprobs
