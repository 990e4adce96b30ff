"""Error classes from the provider's own signal: real bodies of each provider, no I/O.

The bodies are the ones providers document (and the simulator sends); the library's guess is
what some LiteLLM version raised. Whatever that guess, the provider's words decide.
"""

from __future__ import annotations

import random

import pytest

from pipeline.catalog import ModelSpec
from pipeline.catalog.resilience import Deployment, Resilience
from pipeline.contracts.models import ErrorCode, SkipReason
from pipeline.stages.deployments import DeploymentPool, Unavailable
from pipeline.stages.retry import Action, decide
from pipeline.state.health import InProcessHealth
from pipeline.transport.error_signals import ProviderSignal, classify_signal, embedded_json, retry_after_s
from pipeline.transport.provider import ProviderError

E = ErrorCode

OPENAI_QUOTA = {"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                          "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}
OPENAI_RATE = {"error": {"message": "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3.",
                         "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
OPENAI_POLICY = {"error": {"message": "Your request was rejected as a result of our safety system.",
                           "type": "invalid_request_error", "param": None, "code": "content_policy_violation"}}
OPENAI_CONTEXT = {"error": {"message": "This model's maximum context length is 128000 tokens.",
                            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}
OPENAI_KEY = {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                        "code": "invalid_api_key"}}
OPENAI_BAD = {"error": {"message": "Invalid value for 'temperature'.", "type": "invalid_request_error",
                        "param": "temperature", "code": None}}
OPENAI_SERVER = {"error": {"message": "The server had an error while processing your request.",
                           "type": "server_error", "code": None}}
AZURE_FILTER = {"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
                          "management policy.", "type": None, "param": "prompt", "code": "content_filter",
                          "status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation",
                                                        "content_filter_result": {"hate": {"filtered": True}}}}}
ANTHROPIC_OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
ANTHROPIC_RATE = {"type": "error", "error": {"type": "rate_limit_error", "message": "Number of request tokens has "
                                             "exceeded your per-minute rate limit"}}
ANTHROPIC_CONTEXT = {"type": "error", "error": {"type": "invalid_request_error",
                                                "message": "prompt is too long: 210000 tokens > 200000 maximum"}}
ANTHROPIC_CREDIT = {"type": "error", "error": {"type": "invalid_request_error", "message": "Your credit balance is "
                                               "too low to access the Anthropic API. Please go to Plans & Billing."}}
ANTHROPIC_AUTH = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
ANTHROPIC_PERMISSION = {"type": "error", "error": {"type": "permission_error", "message": "not allowed"}}
ANTHROPIC_NOT_FOUND = {"type": "error", "error": {"type": "not_found_error", "message": "model: claude-x"}}
ANTHROPIC_API = {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}
GOOGLE_EXHAUSTED = {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                              "status": "RESOURCE_EXHAUSTED"}}
GOOGLE_UNAVAILABLE = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
GOOGLE_TOO_LONG = {"error": {"code": 400, "message": "The input token count (1200000) exceeds the maximum number of "
                             "tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}}


@pytest.mark.parametrize(("status", "body", "expected"), [
    (429, OPENAI_QUOTA, E.QUOTA_EXCEEDED),
    (429, OPENAI_RATE, E.RATE_LIMITED),
    (400, OPENAI_POLICY, E.CONTENT_POLICY),
    (400, OPENAI_CONTEXT, E.CONTEXT_WINDOW_EXCEEDED),
    (401, OPENAI_KEY, E.AUTH_ERROR),
    (500, OPENAI_SERVER, E.SERVER_ERROR),
    (400, AZURE_FILTER, E.CONTENT_POLICY),
    (529, ANTHROPIC_OVERLOADED, E.SERVER_ERROR),
    (429, ANTHROPIC_RATE, E.RATE_LIMITED),
    (400, ANTHROPIC_CONTEXT, E.CONTEXT_WINDOW_EXCEEDED),
    (400, ANTHROPIC_CREDIT, E.QUOTA_EXCEEDED),
    (401, ANTHROPIC_AUTH, E.AUTH_ERROR),
    (403, ANTHROPIC_PERMISSION, E.AUTH_ERROR),
    (404, ANTHROPIC_NOT_FOUND, E.BAD_REQUEST),
    (429, GOOGLE_EXHAUSTED, E.RATE_LIMITED),
    (503, GOOGLE_UNAVAILABLE, E.SERVER_ERROR),
    (400, GOOGLE_TOO_LONG, E.CONTEXT_WINDOW_EXCEEDED),
    (400, {"error": "input length (4 tokens) exceeds the available context size"}, E.CONTEXT_WINDOW_EXCEEDED),
    (400, {"error": "content_policy_violation: rejected"}, E.CONTENT_POLICY),
    (400, "This model's maximum context length is 4096 tokens.", E.CONTEXT_WINDOW_EXCEEDED),  # vLLM-style text
    (400, OPENAI_QUOTA["error"], E.QUOTA_EXCEEDED),  # the SDK's `body`: the inner object
])
@pytest.mark.parametrize("guess", [None, E.BAD_REQUEST, E.RATE_LIMITED, E.SERVER_ERROR, E.PROVIDER_ERROR])
def test_body_decides_whatever_the_library_guessed(status: int, body: object, expected: ErrorCode,
                                                    guess: ErrorCode | None) -> None:
    assert classify_signal(ProviderSignal(status=status, body=body), guess) is expected


def test_a_generic_body_leaves_the_class_to_the_status_or_a_specific_guess() -> None:
    assert classify_signal(ProviderSignal(status=400, body=OPENAI_BAD)) is E.BAD_REQUEST
    assert classify_signal(ProviderSignal(status=400, body=OPENAI_BAD), E.BAD_REQUEST) is E.BAD_REQUEST
    assert classify_signal(ProviderSignal(status=400, body=OPENAI_BAD), E.CONTEXT_WINDOW_EXCEEDED) \
        is E.CONTEXT_WINDOW_EXCEEDED
    assert classify_signal(ProviderSignal(status=500, body=ANTHROPIC_API)) is E.SERVER_ERROR
    assert classify_signal(ProviderSignal(body=ANTHROPIC_API)) is E.SERVER_ERROR  # the generic type, no status
    stopped = {"error": "model runner has unexpectedly stopped"}  # Ollama: text only
    assert classify_signal(ProviderSignal(status=500, body=stopped)) is E.SERVER_ERROR
    assert classify_signal(ProviderSignal(status=500, body=stopped), E.CONNECTION_ERROR) is E.CONNECTION_ERROR


def test_litellm_1_110_content_policy_is_still_content_policy() -> None:
    """LiteLLM 1.110 raises a plain BadRequestError; the body's code is what counts."""
    signal = ProviderSignal(status=400, body=OPENAI_POLICY["error"], message="litellm.BadRequestError: OpenAIException")
    assert classify_signal(signal, E.BAD_REQUEST) is E.CONTENT_POLICY


def test_body_embedded_in_the_message() -> None:
    message = ('litellm.InternalServerError: AnthropicError - {"type":"error","error":{"type":"overloaded_error",'
               '"message":"Overloaded"}}')
    assert embedded_json(message) == ANTHROPIC_OVERLOADED
    assert classify_signal(ProviderSignal(status=500, message=message), E.SERVER_ERROR) is E.SERVER_ERROR
    credit = 'BadRequestError: AnthropicException - {"type":"error","error":{"type":"invalid_request_error",' \
             '"message":"Your credit balance is too low to access the Anthropic API."}}'
    assert classify_signal(ProviderSignal(status=400, message=credit), E.BAD_REQUEST) is E.QUOTA_EXCEEDED
    assert embedded_json("no body {not json} here {\"other\": 1}") is None


@pytest.mark.parametrize(("status", "expected"), [
    (400, E.BAD_REQUEST), (401, E.AUTH_ERROR), (402, E.QUOTA_EXCEEDED), (403, E.AUTH_ERROR), (404, E.BAD_REQUEST),
    (408, E.TIMEOUT), (409, E.SERVER_ERROR), (413, E.BAD_REQUEST), (418, E.BAD_REQUEST), (422, E.BAD_REQUEST),
    (429, E.RATE_LIMITED), (500, E.SERVER_ERROR), (502, E.SERVER_ERROR), (503, E.SERVER_ERROR),
    (504, E.TIMEOUT), (529, E.SERVER_ERROR), (599, E.SERVER_ERROR),
])
def test_status_alone(status: int, expected: ErrorCode) -> None:
    assert classify_signal(ProviderSignal(status=status)) is expected
    assert classify_signal(ProviderSignal(status=status), E.BAD_REQUEST) is expected  # generic guesses rank lower


def test_library_guess_where_the_provider_said_nothing() -> None:
    assert classify_signal(ProviderSignal(), E.TIMEOUT) is E.TIMEOUT
    assert classify_signal(ProviderSignal(status=500, message="Connection refused"), E.CONNECTION_ERROR) \
        is E.CONNECTION_ERROR  # LiteLLM's synthetic 500 for a refused connection
    assert classify_signal(ProviderSignal(status=400, message="bad"), E.CONTEXT_WINDOW_EXCEEDED) \
        is E.CONTEXT_WINDOW_EXCEEDED  # a phrase LiteLLM knows and we do not
    assert classify_signal(ProviderSignal(), None) is E.PROVIDER_ERROR
    assert classify_signal(ProviderSignal(status=302), None) is E.PROVIDER_ERROR
    assert classify_signal(ProviderSignal(status=302), E.BAD_REQUEST) is E.BAD_REQUEST
    assert classify_signal(ProviderSignal(body={"error": {"type": "invalid_request_error"}})) is E.BAD_REQUEST
    assert classify_signal(ProviderSignal(body={"error": {"type": "api_error"}})) is E.SERVER_ERROR


def test_several_classes_in_one_body_pick_the_most_specific() -> None:
    body = {"error": {"code": "rate_limit_exceeded", "innererror": {"code": "insufficient_quota"}}}
    assert classify_signal(ProviderSignal(status=429, body=body)) is E.QUOTA_EXCEEDED
    body = {"error": {"code": 400, "details": [{"type": "context_length_exceeded"}], "status": "INVALID_ARGUMENT"}}
    assert classify_signal(ProviderSignal(status=400, body=body)) is E.CONTEXT_WINDOW_EXCEEDED
    assert classify_signal(ProviderSignal(body={"error": {"code": True}})) is E.PROVIDER_ERROR  # not a code


@pytest.mark.parametrize(("headers", "expected"), [
    ({"retry-after": "2.5"}, 2.5),
    ({"Retry-After": "3"}, 3.0),
    ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # the precise one wins
    ({"retry-after": "Wed, 02 Dec 2026 00:00:10 GMT"}, 10.0),
    ({"retry-after": "soon"}, None),
    ({"retry-after": "-1"}, None),
    ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}, 360.0),
    ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1.5s",
      "x-ratelimit-remaining-requests": "10", "x-ratelimit-reset-requests": "30s"}, 1.5),
    ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20ms"}, 0.02),
    ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1h2m3s"}, 3723.0),
    ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "7"}, 7.0),
    ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "later"}, None),
    ({"x-ratelimit-remaining-tokens": "5", "x-ratelimit-reset-tokens": "1s"}, None),  # that limit did not run out
    ({}, None),
])
def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    now = 1796169600.0  # Wed, 02 Dec 2026 00:00:00 GMT
    assert retry_after_s(headers, now_s=now) == pytest.approx(expected) if expected is not None \
        else retry_after_s(headers, now_s=now) is None


def test_quota_is_not_a_rate_limit() -> None:
    """No retry on the same model (the account has no quota anywhere), no Retry-After wait."""
    error = ProviderError(E.QUOTA_EXCEEDED, "insufficient_quota", status=429, retry_after_s=20.0)
    decision = decide(error, 0, Resilience(), random.Random(1))
    assert decision.action is Action.FALLBACK and decision.delay_s == 0.0


async def test_one_quota_answer_cools_the_deployment_down_for_quota_cooldown_s() -> None:
    pool = DeploymentPool(InProcessHealth())
    deployment = Deployment(id="d", name="m/d", litellm_model="openai/gpt-4o-mini")
    spec = _spec(deployment)
    policy = Resilience(allowed_fails=3, cooldown_s=5, quota_cooldown_s=600)
    pool.started(deployment)
    started = await pool.finished(deployment, policy, 10.0, error=ProviderError(E.QUOTA_EXCEEDED, "q"),
                                  estimated_tokens=1, actual_tokens=1)
    assert started is True  # the first quota answer, not the third
    unavailable = await pool.pick(spec, 1)
    assert isinstance(unavailable, Unavailable) and unavailable.reason is SkipReason.COOLING_DOWN
    assert 590 < unavailable.wait_s <= 600
    # A rate limit needs allowed_fails answers and cools down for cooldown_s only.
    other = DeploymentPool(InProcessHealth())
    other.started(deployment)
    assert await other.finished(deployment, policy, 10.0, error=ProviderError(E.RATE_LIMITED, "r"),
                                estimated_tokens=1, actual_tokens=1) is False


def _spec(deployment: Deployment) -> ModelSpec:
    return ModelSpec(name="m", litellm_model=deployment.litellm_model, context_window=1000,
                     deployments=(deployment,))
