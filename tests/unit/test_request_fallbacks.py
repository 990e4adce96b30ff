"""Fallbacks as users expect them: a request's own `fallbacks`, and an explicit model's configured ones."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.catalog import Catalog, ConfigError
from pipeline.contracts.models import (
    AttemptOutcome,
    CompletionRequest,
    ErrorCode,
    FallbackSource,
    ReplyStatus,
    SkipReason,
)
from pipeline.stages.call import CallContext, call_with_fallback
from pipeline.stages.reply import build_reply, usage_events
from pipeline.stages.route import RoutePlan, RouteRefusal, plan_route
from pipeline.transport.provider import MockProvider, ProviderError, ProviderResponse
from tests.catalogs import catalog_from

MODELS = """
models:
  cheap:   {litellm_model: openai/gpt-4o-mini, context_window: 4000, quality: 2, fallbacks: [claude, pricey]}
  pricey:  {litellm_model: openai/gpt-4o, context_window: 128000, quality: 5, capabilities: [tools]}
  claude:  {litellm_model: anthropic/claude-haiku-4-5, context_window: 200000, quality: 4}
  lonely:  {litellm_model: openai/gpt-4o-mini}
  retired: {litellm_model: openai/gpt-4o-mini, disabled: true}
"""
ROUTING = """
routes:
  cheapest: {candidates: [pricey, cheap], cost_preference: cheapest}
  tools:    {candidates: [pricey], capabilities: [tools]}
"""


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return catalog_from(tmp_path_factory.mktemp("cfg"), MODELS, ROUTING)


def req(task: str = "cheapest", **kw: object) -> CompletionRequest:
    return CompletionRequest.model_validate(
        {"request_id": "r", "task_type": task, "messages": [{"role": "user", "content": "hello"}], **kw})


def plan_of(request: CompletionRequest, catalog: Catalog) -> RoutePlan:
    plan = plan_route(request, catalog)
    assert isinstance(plan, RoutePlan), plan
    return plan


def names(plan: RoutePlan) -> list[str]:
    return [c.spec.name for c in plan.candidates]


def test_explicit_model_keeps_its_configured_fallbacks(catalog: Catalog) -> None:
    plan = plan_of(req(model="cheap"), catalog)
    assert names(plan) == ["cheap", "claude", "pricey"]
    assert plan.fallbacks == ("claude", "pricey") and plan.fallbacks_source is FallbackSource.CATALOG


def test_explicit_model_without_configured_fallbacks_is_alone(catalog: Catalog) -> None:
    plan = plan_of(req(model="lonely"), catalog)
    assert names(plan) == ["lonely"] and plan.fallbacks == () and plan.fallbacks_source is None


def test_request_fallbacks_replace_the_configured_ones(catalog: Catalog) -> None:
    plan = plan_of(req(model="cheap", fallbacks=["pricey"]), catalog)
    assert names(plan) == ["cheap", "pricey"]
    assert plan.fallbacks == ("pricey",) and plan.fallbacks_source is FallbackSource.REQUEST


def test_empty_request_fallbacks_mean_none(catalog: Catalog) -> None:
    plan = plan_of(req(model="cheap", fallbacks=[]), catalog)
    assert names(plan) == ["cheap"] and plan.fallbacks == () and plan.fallbacks_source is None


def test_request_fallbacks_follow_the_ordered_route_in_their_own_order(catalog: Catalog) -> None:
    # The route is ordered cheapest first (cheap, pricey); the fallbacks keep the order given.
    plan = plan_of(req(fallbacks=["lonely", "claude"]), catalog)
    assert names(plan) == ["cheap", "pricey", "lonely", "claude"]
    assert plan.fallbacks_source is FallbackSource.REQUEST


def test_a_fallback_already_in_the_route_is_not_tried_twice(catalog: Catalog) -> None:
    plan = plan_of(req(fallbacks=["pricey", "claude"]), catalog)
    assert names(plan) == ["cheap", "pricey", "claude"] and plan.fallbacks == ("claude",)


def test_a_route_request_ignores_catalog_fallbacks_of_its_candidates(catalog: Catalog) -> None:
    """Configured fallbacks belong to an explicit model; a route is its own chain."""
    assert names(plan_of(req(), catalog)) == ["cheap", "pricey"]


def test_unknown_fallback_is_refused_naming_it(catalog: Catalog) -> None:
    refusal = plan_route(req(model="cheap", fallbacks=["claude", "gpt-17"]), catalog)
    assert isinstance(refusal, RouteRefusal) and refusal.code is ErrorCode.UNKNOWN_MODEL
    assert refusal.detail == "fallbacks[1]: model 'gpt-17' is not in the catalog"


def test_fallbacks_face_the_same_eligibility(catalog: Catalog) -> None:
    # The tools route needs `tools`: only pricey has it, so the request's fallbacks are skipped with reasons.
    plan = plan_of(req("tools", fallbacks=["claude", "retired"]), catalog)
    assert names(plan) == ["pricey"]
    assert [(s.model, s.reason) for s in plan.skipped] == [
        ("claude", SkipReason.MISSING_CAPABILITY), ("retired", SkipReason.DISABLED)]


def test_fallbacks_face_the_cost_ceiling(catalog: Catalog) -> None:
    # 1,000 completion tokens: gpt-4o-mini ~0.0006 USD, gpt-4o ~0.01: the ceiling keeps pricey out.
    plan = plan_of(req(model="cheap", max_tokens=1000, max_cost_usd=0.006), catalog)
    assert names(plan) == ["cheap", "claude"]
    assert [(s.model, s.reason) for s in plan.skipped] == [("pricey", SkipReason.OVER_COST_CEILING)]


def test_only_ineligible_model_and_fallbacks_refuse_with_every_reason(catalog: Catalog) -> None:
    refusal = plan_route(req(model="retired", fallbacks=["lonely"], max_tokens=1000, max_cost_usd=1e-5), catalog)
    assert isinstance(refusal, RouteRefusal) and refusal.code is ErrorCode.NO_ELIGIBLE_MODEL
    assert "retired: disabled" in refusal.detail and "lonely: over_cost_ceiling" in refusal.detail


@pytest.mark.parametrize(("fields", "needle"), [
    ({"fallbacks": ["claude", "claude"]}, "'claude' named twice"),
    ({"model": "cheap", "fallbacks": ["cheap"]}, "'cheap' named twice or as the model itself"),
    ({"fallbacks": [f"m{i}" for i in range(9)]}, "at most 8"),
    ({"fallbacks": [""]}, "at least 1 character"),
    ({"fallbacks": "claude"}, "valid list"),
])
def test_bad_fallbacks_are_a_validation_error_naming_the_field(fields: dict, needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        req(**fields)
    assert "fallbacks" in str(info.value) and needle in str(info.value)


def test_the_sdk_sends_fallbacks_and_keeps_an_empty_list_apart_from_absent() -> None:
    """`[]` (no fallbacks) must survive the client's exclude_none serialisation; absent stays absent."""
    from pipeline.client import PipelineClient
    from pipeline.settings import Settings

    client = PipelineClient(Settings(kafka_bootstrap_servers="127.0.0.1:1", topic_replies="llm.replies"))
    messages = [{"role": "user", "content": "hi"}]
    given = client.build_request(messages=messages, model="cheap", fallbacks=["claude"])
    assert given.fallbacks == ["claude"]
    assert '"fallbacks":[]' in client.build_request(messages=messages, fallbacks=[]).model_dump_json(exclude_none=True)
    assert "fallbacks" not in client.build_request(messages=messages).model_dump_json(exclude_none=True)
    with pytest.raises(ValidationError, match="fallbacks"):
        client.build_request(messages=messages, model="cheap", fallbacks=["cheap"])


@pytest.mark.parametrize(("fallbacks", "needle"), [
    ("[claude, nope]", "models.cheap.fallbacks[1]: unknown model 'nope'"),
    ("[cheap]", "models.cheap.fallbacks[0]: a model cannot be its own fallback"),
    ("[claude, claude]", "models.cheap.fallbacks: names a model more than once"),
])
def test_catalog_fallbacks_are_validated_at_load(tmp_path: Path, fallbacks: str, needle: str) -> None:
    models = MODELS.replace("fallbacks: [claude, pricey]", f"fallbacks: {fallbacks}")
    with pytest.raises(ConfigError) as info:
        catalog_from(tmp_path, models, ROUTING)
    assert needle in str(info.value)


async def test_explicit_model_failing_falls_back_and_the_reply_says_why(catalog: Catalog) -> None:
    provider = MockProvider.scripted({
        "cheap": [ProviderError(ErrorCode.AUTH_ERROR, "401 from upstream", status=401)],
        "claude": [ProviderResponse("from claude", 10, 5)],
    })
    request = req(model="cheap")
    plan = plan_of(request, catalog)
    outcome = await call_with_fallback(request, plan, CallContext(provider, 5))
    reply = build_reply(request, plan, outcome, 1.0)
    assert reply.status is ReplyStatus.OK and reply.model == "claude" and reply.content == "from claude"
    assert [(a.model, a.outcome) for a in reply.attempts] == [
        ("cheap", AttemptOutcome.ERROR), ("claude", AttemptOutcome.OK)]
    assert reply.routing.fallbacks == ["claude", "pricey"]
    assert reply.routing.fallbacks_source is FallbackSource.CATALOG
    assert [(e.model, e.requested_model, e.is_fallback) for e in usage_events(request, plan, outcome)] == [
        ("cheap", "cheap", False), ("claude", "cheap", True)]
