"""Route, call (fallback chain) and reply/record stages, with a scripted provider (no I/O)."""

from pathlib import Path

import pytest

from pipeline.catalog import load_catalog
from pipeline.contracts.models import AttemptOutcome, CompletionRequest, ErrorCode, ReplyStatus
from pipeline.stages.call import CallContext, call_with_fallback
from pipeline.stages.cost import call_cost
from pipeline.stages.reply import build_reply, usage_events
from pipeline.stages.route import RoutePlan, RouteRefusal, plan_route
from pipeline.transport.provider import MockProvider, ProviderError, ProviderResponse

CATALOG = load_catalog(Path(__file__).resolve().parents[2] / "config")


def request(**kw: object) -> CompletionRequest:
    base = {"request_id": "r1", "task_type": "summarize", "messages": [{"role": "user", "content": "x"}],
            "tenant": "acme", "metadata": {"k": "v"}}
    return CompletionRequest.model_validate({**base, **kw})


def scripted(script: dict) -> MockProvider:
    """Answers per model name: a ProviderResponse, or a ProviderError to raise."""
    return MockProvider.scripted({name: [outcome] for name, outcome in script.items()})


def test_route_by_task_type_and_default() -> None:
    plan = plan_route(request(), CATALOG)
    assert isinstance(plan, RoutePlan)
    assert [c.spec.name for c in plan.candidates] == list(CATALOG.routing.routes["summarize"].candidates)
    plan = plan_route(request(task_type="poetry"), CATALOG)
    assert isinstance(plan, RoutePlan)
    assert [c.spec.name for c in plan.candidates] == list(CATALOG.routing.default.candidates)


def test_explicit_model_skips_routing_and_unknown_model_is_refused() -> None:
    plan = plan_route(request(model="sim-llama"), CATALOG)
    assert isinstance(plan, RoutePlan) and [c.spec.name for c in plan.candidates] == ["sim-llama"]
    refusal = plan_route(request(model="gpt-17"), CATALOG)
    assert isinstance(refusal, RouteRefusal) and refusal.code is ErrorCode.UNKNOWN_MODEL


def test_no_route_without_default() -> None:
    from dataclasses import replace

    no_default = replace(CATALOG, routing=CATALOG.routing.model_copy(update={"default": None}))
    refusal = plan_route(request(task_type="poetry"), no_default)
    assert isinstance(refusal, RouteRefusal) and refusal.code is ErrorCode.NO_ROUTE


async def test_first_candidate_answers() -> None:
    provider = scripted({"sim-gpt-4o-mini": ProviderResponse("hello", 100, 20, "stop")})
    plan = plan_route(request(), CATALOG)
    outcome = await call_with_fallback(request(), plan, CallContext(provider, 5))
    reply = build_reply(request(), plan, outcome, 12.5)
    assert reply.status is ReplyStatus.OK and reply.content == "hello" and reply.model == "sim-gpt-4o-mini"
    assert reply.usage.total_tokens == 120 and reply.metadata == {"k": "v"}
    assert reply.cost_usd == pytest.approx(100 * 0.15e-6 + 20 * 0.6e-6)
    assert provider.called == ["sim-gpt-4o-mini"]


async def test_fallback_records_both_attempts() -> None:
    provider = scripted({
        "sim-gpt-4o-mini": ProviderError(ErrorCode.AUTH_ERROR, "401 from upstream", status=401),
        "sim-claude-haiku": ProviderResponse("from claude", 50, 10),
    })
    req = request()
    plan = plan_route(req, CATALOG)
    outcome = await call_with_fallback(req, plan, CallContext(provider, 5))
    reply = build_reply(req, plan, outcome, 30.0)
    assert reply.status is ReplyStatus.OK and reply.model == "sim-claude-haiku" and reply.provider == "anthropic"
    assert [(a.model, a.outcome, a.error_code) for a in reply.attempts] == [
        ("sim-gpt-4o-mini", AttemptOutcome.ERROR, ErrorCode.AUTH_ERROR),
        ("sim-claude-haiku", AttemptOutcome.OK, None),
    ]
    events = usage_events(req, plan, outcome)
    assert [(e.attempt, e.is_fallback, e.status, e.model) for e in events] == [
        (1, False, AttemptOutcome.ERROR, "sim-gpt-4o-mini"),
        (2, True, AttemptOutcome.OK, "sim-claude-haiku"),
    ]
    assert len({e.event_id for e in events}) == 2
    assert events[0].cost_usd == 0 and events[1].cost_usd == pytest.approx(50 * 1e-6 + 10 * 5e-6)
    assert all(e.tenant == "acme" and e.task_type == "summarize" for e in events)


async def test_every_candidate_failing_gives_error_reply_naming_each() -> None:
    provider = scripted({
        "sim-gpt-4o-mini": ProviderError(ErrorCode.AUTH_ERROR, "401"),
        "sim-claude-haiku": ProviderError(ErrorCode.CONTENT_POLICY, "refused"),
    })
    req = request()
    plan = plan_route(req, CATALOG)
    outcome = await call_with_fallback(req, plan, CallContext(provider, 5))
    reply = build_reply(req, plan, outcome, 1.0)
    assert reply.status is ReplyStatus.ERROR and reply.error is not None
    assert reply.error.code is ErrorCode.ALL_CANDIDATES_FAILED
    assert "sim-gpt-4o-mini: auth_error" in reply.error.message and "refused" in reply.error.message
    assert len(reply.attempts) == 2 and reply.content is None


async def test_bad_request_does_not_fall_back() -> None:
    provider = scripted({"sim-gpt-4o-mini": ProviderError(ErrorCode.BAD_REQUEST, "invalid parameter")})
    req = request()
    plan = plan_route(req, CATALOG)
    outcome = await call_with_fallback(req, plan, CallContext(provider, 5))
    reply = build_reply(req, plan, outcome, 1.0)
    assert provider.called == ["sim-gpt-4o-mini"]
    assert reply.error is not None and reply.error.code is ErrorCode.BAD_REQUEST


def test_cost_uses_catalog_override_and_litellm_map() -> None:
    assert call_cost(CATALOG.models["sim-llama"], 10_000, 10_000) == 0.0
    assert call_cost(CATALOG.models["gpt-4o"], 1_000_000, 1_000_000) == pytest.approx(2.5 + 10.0)


async def test_the_mock_provider_streams_its_answer_and_records_every_call() -> None:
    seen: list[str] = []

    async def sink(delta: str) -> None:
        seen.append(delta)

    provider = MockProvider(lambda call: ProviderResponse(f"hi {call.request.request_id}", 3, 2))
    spec = CATALOG.models["sim-gpt-4o-mini"].deployments[0]
    streamed = await provider.complete(spec, request(), timeout_s=2.0, on_delta=sink)
    plain = await provider.complete(spec, request(), timeout_s=3.0)
    assert seen == ["hi r1"] and streamed.streamed_chunks == 1 and plain.streamed_chunks == 0
    assert [(c.spec.name, c.timeout_s, c.streamed) for c in provider.calls] == [
        (spec.name, 2.0, True), (spec.name, 3.0, False)]
