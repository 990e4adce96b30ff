"""context_window_fallbacks and content_policy_fallbacks: tried only after a failure of their kind (as LiteLLM)."""

from pathlib import Path

import pytest

from pipeline.catalog import Catalog, ConfigError
from pipeline.contracts.models import CompletionRequest, ErrorCode, ReplyStatus, SkipReason
from pipeline.stages.call import CallContext, CallOutcome, call_with_fallback
from pipeline.stages.reply import build_reply, usage_events
from pipeline.stages.route import (
    CONTENT_POLICY_FAILURES,
    CONTEXT_WINDOW_FAILURES,
    RoutePlan,
    RouteRefusal,
    plan_route,
)
from pipeline.transport.provider import MockProvider, ProviderError, ProviderResponse
from tests.catalogs import catalog_from

NO_RETRY = "resilience: {retry: {server_error: {retries: 0}, connection_error: {retries: 0}}}"
MODELS = f"""
models:
  small:   {{litellm_model: openai/gpt-4o-mini, context_window: 1000, fallbacks: [peer],
             context_window_fallbacks: [big], content_policy_fallbacks: [lenient], {NO_RETRY}}}
  peer:    {{litellm_model: openai/gpt-4o-mini, context_window: 1000, {NO_RETRY}}}
  big:     {{litellm_model: openai/gpt-4o, context_window: 128000}}
  lenient: {{litellm_model: anthropic/claude-haiku-4-5, context_window: 200000}}
  narrow:  {{litellm_model: openai/gpt-4o-mini, context_window: 1000, context_window_fallbacks: [tiny]}}
  tiny:    {{litellm_model: openai/gpt-4o-mini, context_window: 500}}
  both:    {{litellm_model: openai/gpt-4o-mini, context_window: 1000, context_window_fallbacks: [big],
             content_policy_fallbacks: [big]}}
  strict:  {{litellm_model: openai/gpt-4o-mini, content_policy_fallbacks: [lenient],
             resilience: {{content_policy: return}}}}
"""
ROUTING = "routes:\n  chat: {candidates: [small]}\n"
LONG = "lorem ipsum dolor sit amet " * 300  # ~1,500 tokens: over small's 1,000, far under big's


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return catalog_from(tmp_path_factory.mktemp("cfg"), MODELS, ROUTING)


def req(content: str = "hello", **kw: object) -> CompletionRequest:
    return CompletionRequest.model_validate(
        {"request_id": "r", "task_type": "chat", "max_tokens": 50, "messages": [{"role": "user", "content": content}],
         **kw})


def plan_of(request: CompletionRequest, catalog: Catalog) -> RoutePlan:
    plan = plan_route(request, catalog)
    assert isinstance(plan, RoutePlan), plan
    return plan


async def run(request: CompletionRequest, catalog: Catalog,
              script: dict[str, list[ProviderResponse | ProviderError]]) -> tuple[MockProvider, CallOutcome]:
    provider = MockProvider.scripted(script)
    return provider, await call_with_fallback(request, plan_of(request, catalog), CallContext(provider, 5))


def ok(text: str) -> list[ProviderResponse | ProviderError]:
    return [ProviderResponse(text, 10, 5)]


def fail(code: ErrorCode) -> list[ProviderResponse | ProviderError]:
    return [ProviderError(code, f"{code.value} upstream")]


def test_conditional_fallbacks_follow_the_general_ones_each_marked_with_its_kind(catalog: Catalog) -> None:
    plan = plan_of(req(model="small"), catalog)
    assert [(c.spec.name, c.only_after) for c in plan.candidates] == [
        ("small", frozenset()), ("peer", frozenset()), ("big", CONTEXT_WINDOW_FAILURES),
        ("lenient", CONTENT_POLICY_FAILURES)]
    assert plan.fallbacks == ("peer", "big", "lenient")


def test_a_model_in_both_conditional_lists_is_one_candidate_answering_both(catalog: Catalog) -> None:
    plan = plan_of(req(model="both"), catalog)
    assert [(c.spec.name, c.only_after) for c in plan.candidates] == [
        ("both", frozenset()), ("big", CONTEXT_WINDOW_FAILURES | CONTENT_POLICY_FAILURES)]


def test_request_fallbacks_replace_the_conditional_lists_too(catalog: Catalog) -> None:
    assert [c.spec.name for c in plan_of(req(model="small", fallbacks=[]), catalog).candidates] == ["small"]
    assert [c.spec.name for c in plan_of(req(model="small", fallbacks=["lenient"]), catalog).candidates] == [
        "small", "lenient"]
    assert plan_of(req(model="small", fallbacks=["lenient"]), catalog).candidates[1].only_after == frozenset()


def test_a_route_request_ignores_the_conditional_lists_of_its_candidates(catalog: Catalog) -> None:
    assert [c.spec.name for c in plan_of(req(), catalog).candidates] == ["small"]


async def test_a_prompt_too_long_for_the_model_goes_to_its_context_window_fallback(catalog: Catalog) -> None:
    request = req(LONG, model="small")
    plan = plan_of(request, catalog)
    assert [(s.model, s.reason) for s in plan.skipped] == [
        ("small", SkipReason.CONTEXT_TOO_LONG), ("peer", SkipReason.CONTEXT_TOO_LONG)]
    provider, outcome = await run(request, catalog, {"big": ok("from big"), "lenient": ok("from lenient")})
    assert provider.called == ["big"]
    reply = build_reply(request, plan, outcome, 1.0)
    assert reply.status is ReplyStatus.OK and reply.model == "big" and reply.content == "from big"


async def test_a_context_window_error_goes_to_the_context_window_fallback(catalog: Catalog) -> None:
    # The provider counts more tokens than we did: peer's window is no larger, so only big may serve.
    provider, outcome = await run(req(model="small"), catalog, {
        "small": fail(ErrorCode.CONTEXT_WINDOW_EXCEEDED), "big": ok("from big")})
    assert provider.called == ["small", "big"]
    assert [(s.model, s.reason) for s in outcome.skipped] == [("peer", SkipReason.LARGER_CONTEXT_NEEDED)]
    assert outcome.answer is not None and outcome.answer.spec.name == "big"


async def test_a_server_error_does_not_go_to_the_context_window_fallback(catalog: Catalog) -> None:
    request = req(model="small")
    provider, outcome = await run(request, catalog, {
        "small": fail(ErrorCode.SERVER_ERROR), "peer": fail(ErrorCode.SERVER_ERROR), "big": ok("from big"),
        "lenient": ok("from lenient")})
    assert provider.called == ["small", "peer"]
    assert [p.model for p in outcome.passed_over] == ["big", "lenient"]
    assert "context_window_exceeded" in outcome.passed_over[0].detail
    assert outcome.passed_over[1].detail == "tried only after content_policy"
    reply = build_reply(request, plan_of(request, catalog), outcome, 1.0)
    assert reply.status is ReplyStatus.ERROR
    # The reply says why they were not tried, and so do the usage rows.
    assert [(s.model, s.reason) for s in reply.routing.skipped][-2:] == [
        ("big", SkipReason.FALLBACK_NOT_TRIGGERED), ("lenient", SkipReason.FALLBACK_NOT_TRIGGERED)]
    (first, *_) = usage_events(request, plan_of(request, catalog), outcome)
    assert first.route_skipped[-2:] == ["big:fallback_not_triggered", "lenient:fallback_not_triggered"]


async def test_a_content_policy_refusal_goes_to_the_content_policy_fallback(catalog: Catalog) -> None:
    provider, outcome = await run(req(model="small"), catalog, {
        "small": fail(ErrorCode.CONTENT_POLICY), "peer": fail(ErrorCode.CONTENT_POLICY), "big": ok("from big"),
        "lenient": ok("from lenient")})
    assert provider.called == ["small", "peer", "lenient"]  # big answers only a context-window failure
    assert [p.model for p in outcome.passed_over] == ["big"]
    assert outcome.answer is not None and outcome.answer.spec.name == "lenient"


async def test_an_auth_error_does_not_go_to_the_content_policy_fallback(catalog: Catalog) -> None:
    provider, outcome = await run(req(model="small"), catalog, {
        "small": fail(ErrorCode.AUTH_ERROR), "peer": fail(ErrorCode.AUTH_ERROR), "big": ok("from big"),
        "lenient": ok("from lenient")})
    assert provider.called == ["small", "peer"] and outcome.answer is None
    assert [p.model for p in outcome.passed_over] == ["big", "lenient"]


async def test_the_kind_may_come_from_any_earlier_failure_in_the_chain(catalog: Catalog) -> None:
    # small refuses on content; peer then fails otherwise: the refusal still sends the request to lenient.
    provider, outcome = await run(req(model="small"), catalog, {
        "small": fail(ErrorCode.CONTENT_POLICY), "peer": fail(ErrorCode.SERVER_ERROR), "lenient": ok("ok")})
    assert provider.called == ["small", "peer", "lenient"] and outcome.answer is not None


async def test_content_policy_return_stops_at_the_refusal(catalog: Catalog) -> None:
    provider, outcome = await run(req(model="strict"), catalog, {
        "strict": fail(ErrorCode.CONTENT_POLICY), "lenient": ok("from lenient")})
    assert provider.called == ["strict"] and outcome.stopped


def test_a_context_window_fallback_must_still_fit_the_prompt(catalog: Catalog) -> None:
    refusal = plan_route(req(LONG, model="narrow"), catalog)
    assert isinstance(refusal, RouteRefusal) and refusal.code is ErrorCode.NO_ELIGIBLE_MODEL
    assert [(s.model, s.reason) for s in refusal.skipped] == [
        ("narrow", SkipReason.CONTEXT_TOO_LONG), ("tiny", SkipReason.CONTEXT_TOO_LONG)]


def test_a_conditional_fallback_nothing_can_lead_to_is_left_out(tmp_path: Path) -> None:
    models = MODELS.replace("strict:  {litellm_model: openai/gpt-4o-mini,",
                            "strict:  {litellm_model: openai/gpt-4o-mini, disabled: true,")
    refusal = plan_route(req(model="strict"), catalog_from(tmp_path, models, ROUTING))
    assert isinstance(refusal, RouteRefusal) and refusal.code is ErrorCode.NO_ELIGIBLE_MODEL
    assert refusal.detail == "no eligible model: strict: disabled"


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("context_window_fallbacks", "[big, nope]", "models.small.context_window_fallbacks[1]: unknown model 'nope'"),
    ("context_window_fallbacks", "[small]", "models.small.context_window_fallbacks[0]: a model cannot be its own"),
    ("content_policy_fallbacks", "[big, big]", "models.small.content_policy_fallbacks: names a model more than once"),
])
def test_conditional_fallbacks_are_validated_at_load_naming_the_entry(
    tmp_path: Path, key: str, value: str, needle: str,
) -> None:
    models = MODELS.replace(f"{key}: [{'big' if key.startswith('context') else 'lenient'}]", f"{key}: {value}", 1)
    assert models != MODELS
    with pytest.raises(ConfigError) as info:
        catalog_from(tmp_path, models, ROUTING)
    assert needle in str(info.value)


def test_the_catalog_view_shows_each_conditional_list_with_its_kind(catalog: Catalog) -> None:
    from rich.console import Console

    from pipeline.cli.views import catalog_document, print_catalog

    small = next(m for m in catalog_document(catalog)["models"] if m["name"] == "small")
    assert (small["fallbacks"], small["context_window_fallbacks"], small["content_policy_fallbacks"]) == (
        ["peer"], ["big"], ["lenient"])
    console = Console(record=True, width=400)
    print_catalog(console, catalog, "table")
    assert "peer; context window: big; content policy: lenient" in console.export_text()
