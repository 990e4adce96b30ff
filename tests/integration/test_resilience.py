"""Provider resilience against the simulator: LiteLLM's real provider code over real HTTP."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from pipeline.client import PipelineClient
from pipeline.contracts.models import CompletionRequest, ErrorCode, SkipReason
from tests.catalogs import catalog_from

pytestmark = pytest.mark.kafka

SIM = "${PIPELINE_SIMULATOR_URL}"


TWO_MODELS = f"""
defaults: {{cooldown_s: 30, allowed_fails: 3}}
models:
  primary:  {{litellm_model: openai/gpt-4o-mini, api_base: "{SIM}/v1", context_window: 128000}}
  secondary: {{litellm_model: anthropic/claude-haiku-4-5, api_base: "{SIM}", context_window: 200000}}
"""
CHAIN = "default: {candidates: [primary, secondary]}\n"


def req(request_id: str, **kw: object) -> CompletionRequest:
    return CompletionRequest(request_id=request_id, task_type="any",
                             messages=[{"role": "user", "content": "hello"}], **kw)


async def test_rate_limit_is_retried_after_retry_after(settings, start_worker, sim, tmp_path) -> None:
    await start_worker(catalog=catalog_from(tmp_path, TWO_MODELS, CHAIN))
    await sim.add_rule({"model": "gpt-4o-mini", "fault": "rate_limit", "retry_after_s": 1.0, "times": 1})
    async with PipelineClient(settings) as client:
        reply = await client.complete(req("r429"), timeout=30)
    assert reply.status == "ok" and reply.model == "primary"
    assert [a.error_code for a in reply.attempts] == [ErrorCode.RATE_LIMITED, None]
    first, second = await sim.requests()
    assert second["ts"] - first["ts"] >= 1.0  # the provider's Retry-After was honoured


async def test_5xx_storm_falls_back_and_cools_the_primary_down(settings, start_worker, sim, tmp_path) -> None:
    await start_worker(catalog=catalog_from(tmp_path, TWO_MODELS, CHAIN))
    await sim.add_rule({"model": "gpt-4o-mini", "fault": "server_error", "status": 503})
    async with PipelineClient(settings) as client:
        first = await client.complete(req("storm-1"), timeout=60)
        later = [await client.complete(req(f"storm-{i}"), timeout=30) for i in range(2, 6)]
    assert first.status == "ok" and first.model == "secondary"
    assert [a.model for a in first.attempts] == ["primary"] * 3 + ["secondary"]
    for reply in later:  # the primary is cooling down: skipped without a call
        assert reply.model == "secondary" and [a.model for a in reply.attempts] == ["secondary"]
        assert reply.routing.skipped[0].model == "primary"
        assert reply.routing.skipped[0].reason == SkipReason.COOLING_DOWN
    calls = Counter(c["model"] for c in await sim.requests())
    assert calls == {"gpt-4o-mini": 3, "claude-haiku-4-5": 5}


async def test_insufficient_quota_falls_back_at_once_and_cools_down_long(settings, start_worker, sim, tmp_path) -> None:
    """OpenAI's 429 `insufficient_quota` is no rate limit: no retry, no back-pressure wait, the
    fallback answers at once, and one such answer cools the deployment down for quota_cooldown_s."""
    models = TWO_MODELS.replace("{cooldown_s: 30, allowed_fails: 3}",
                                "{cooldown_s: 1, allowed_fails: 3, quota_cooldown_s: 600}")
    await start_worker(catalog=catalog_from(tmp_path, models, CHAIN))
    await sim.add_rule({"model": "gpt-4o-mini", "fault": "quota"})
    async with PipelineClient(settings) as client:
        first = await client.complete(req("quota-1"), timeout=30)
        await asyncio.sleep(1.5)  # longer than cooldown_s: only the quota cooldown still holds
        later = await client.complete(req("quota-2"), timeout=30)
    assert first.status == "ok" and first.model == "secondary"
    assert [a.error_code for a in first.attempts] == [ErrorCode.QUOTA_EXCEEDED, None]
    assert first.latency_ms < 2000  # no Retry-After or back-pressure wait before the fallback
    assert later.model == "secondary" and [a.model for a in later.attempts] == ["secondary"]
    assert later.routing.skipped[0].model == "primary"
    assert later.routing.skipped[0].reason == SkipReason.COOLING_DOWN
    assert Counter(c["model"] for c in await sim.requests()) == {"gpt-4o-mini": 1, "claude-haiku-4-5": 2}


async def test_anthropic_overloaded_is_retried_then_falls_back(settings, start_worker, sim, tmp_path) -> None:
    """Anthropic's 529 `overloaded_error` is a server error: retried, then the fallback."""
    chain = "default: {candidates: [secondary, primary]}\n"
    await start_worker(catalog=catalog_from(tmp_path, TWO_MODELS, chain))
    await sim.add_rule({"model": "claude-haiku-4-5", "fault": "overloaded"})
    async with PipelineClient(settings) as client:
        reply = await client.complete(req("overloaded"), timeout=60)
    assert reply.status == "ok" and reply.model == "primary"
    assert [a.error_code for a in reply.attempts] == [ErrorCode.SERVER_ERROR] * 3 + [None]


async def test_context_length_error_falls_back_to_a_larger_context_model(settings, start_worker, sim, tmp_path) -> None:
    await start_worker(catalog=catalog_from(tmp_path, TWO_MODELS, CHAIN))
    await sim.add_rule({"model": "gpt-4o-mini", "fault": "context_length"})
    async with PipelineClient(settings) as client:
        reply = await client.complete(req("ctx"), timeout=30)
    assert reply.model == "secondary"
    assert [a.error_code for a in reply.attempts] == [ErrorCode.CONTEXT_WINDOW_EXCEEDED, None]  # no retry


async def test_auth_error_is_not_retried(settings, start_worker, sim, tmp_path) -> None:
    await start_worker(catalog=catalog_from(tmp_path, TWO_MODELS, "default: {candidates: [primary]}\n"))
    await sim.add_rule({"model": "gpt-4o-mini", "fault": "auth"})
    async with PipelineClient(settings) as client:
        reply = await client.complete(req("auth"), timeout=30)
    assert reply.status == "error" and reply.error.code == ErrorCode.AUTH_ERROR
    assert "primary" in reply.error.message and "Incorrect API key" in reply.error.message
    assert len(await sim.requests()) == 1


async def test_timeout_is_cut_at_the_per_attempt_timeout(settings, start_worker, sim, tmp_path) -> None:
    models = TWO_MODELS.replace("context_window: 128000}", "context_window: 128000, "
                                "resilience: {timeout_s: 0.5, retry: {timeout: {retries: 0}}}}")
    await start_worker(catalog=catalog_from(tmp_path, models, CHAIN))
    await sim.add_rule({"model": "gpt-4o-mini", "fault": "timeout", "hang_s": 10})
    async with PipelineClient(settings) as client:
        reply = await client.complete(req("slow"), timeout=30)
    assert reply.model == "secondary"
    (cut, _) = reply.attempts
    assert cut.error_code == ErrorCode.TIMEOUT and cut.latency_ms < 5000  # cut, not the 10 s hang


async def test_a_silent_provider_gets_one_attempt_then_the_fallback_and_cools_down(
        settings, start_worker, sim, tmp_path) -> None:
    models = TWO_MODELS.replace("context_window: 128000}", "context_window: 128000, resilience: {timeout_s: 1.0}}")
    await start_worker(catalog=catalog_from(tmp_path, models, CHAIN))  # the default policy: timeouts not retried
    await sim.add_rule({"model": "gpt-4o-mini", "fault": "timeout", "hang_s": 20})
    async with PipelineClient(settings) as client:
        reply = await client.complete(req("silent"), timeout=30)
        later = await client.complete(req("silent-2"), timeout=30)
    assert reply.model == "secondary" and [a.error_code for a in reply.attempts] == [ErrorCode.TIMEOUT, None]
    # The fallback starts one timeout (plus a small slack) after the request, not two or three.
    assert reply.latency_ms - reply.attempts[1].latency_ms < 1000 + 1500
    assert [a.model for a in later.attempts] == ["secondary"]  # one timeout cooled the deployment down
    assert [(s.model, s.reason) for s in later.routing.skipped] == [("primary", SkipReason.COOLING_DOWN)]


async def test_load_is_split_across_deployments_by_weight(settings, start_worker, sim, tmp_path) -> None:
    models = f"""
models:
  balanced:
    litellm_model: openai/gpt-4o-mini
    # The split alone: a slow call on a loaded machine must not cool a deployment down and skew it.
    resilience: {{retry_timeouts: true, allowed_fails: 1000}}
    deployments:
      - {{id: heavy, api_base: "{SIM}/v1", weight: 3}}
      - {{id: light, litellm_model: openai/gpt-4o-mini-2024-07-18, api_base: "{SIM}/v1", weight: 1}}
"""
    await start_worker(catalog=catalog_from(tmp_path, models, "default: {candidates: [balanced]}\n"))
    async with PipelineClient(settings) as client:
        replies = await asyncio.gather(*(client.complete(req(f"w{i}"), timeout=60) for i in range(200)))
    deployments = Counter(r.attempts[0].deployment for r in replies)
    failed = [(r.request_id, a.deployment, a.error_code) for r in replies for a in r.attempts if a.error_code]
    assert deployments["balanced@heavy"] / 200 == pytest.approx(0.75, abs=0.1), (deployments, failed)
    calls = Counter(c["model"] for c in await sim.requests())
    assert calls["gpt-4o-mini"] == deployments["balanced@heavy"]  # the simulator saw the same split


async def test_rpm_limit_is_never_exceeded_in_a_burst(settings, start_worker, sim, tmp_path) -> None:
    models = f"""
models:
  capped:
    litellm_model: openai/gpt-4o-mini
    deployments: [{{id: only, api_base: "{SIM}/v1", rpm: 10}}]
"""
    await start_worker(catalog=catalog_from(tmp_path, models, "default: {candidates: [capped]}\n"),
                       rate_limit_wait_max_s=1.0)
    async with PipelineClient(settings) as client:
        replies = await asyncio.gather(*(client.complete(req(f"b{i}"), timeout=60) for i in range(25)))
    assert sum(r.status == "ok" for r in replies) == 10
    assert len(await sim.requests()) == 10
    refused = [r for r in replies if r.status == "error"]
    assert all(r.routing.skipped[-1].reason == SkipReason.RATE_LIMIT_REACHED for r in refused)


async def test_deadline_passing_during_backoff_gives_deadline_exceeded(settings, start_worker, sim, tmp_path) -> None:
    await start_worker(catalog=catalog_from(tmp_path, TWO_MODELS, "default: {candidates: [primary]}\n"))
    await sim.add_rule({"model": "gpt-4o-mini", "fault": "rate_limit", "retry_after_s": 5})
    async with PipelineClient(settings) as client:
        reply = await client.complete(req("hurry", deadline_ms=2000), timeout=30)
    assert reply.status == "error" and reply.error.code == ErrorCode.DEADLINE_EXCEEDED
    assert len(await sim.requests()) == 1  # no attempt started after the deadline


async def test_an_explicit_model_falls_back_to_its_configured_then_the_requests_fallbacks(
    settings, start_worker, sim, tmp_path,
) -> None:
    """Issue 18: `model` keeps that model's catalog fallbacks; the request's `fallbacks` replace them; [] is none."""
    models = TWO_MODELS.replace("context_window: 128000}", "context_window: 128000, fallbacks: [secondary]}") + (
        f'  tertiary: {{litellm_model: openai/gpt-4o, api_base: "{SIM}/v1", context_window: 128000}}\n')
    await start_worker(catalog=catalog_from(tmp_path, models, "default: {candidates: [tertiary]}\n"))
    await sim.add_rule({"model": "gpt-4o-mini", "fault": "auth"})  # the primary's key is bad: no retry
    async with PipelineClient(settings) as client:
        configured = await client.complete(req("fb-configured", model="primary"), timeout=30)
        given = await client.complete(task_type="any", messages=[{"role": "user", "content": "hello"}],
                                      request_id="fb-given", model="primary", fallbacks=["tertiary"], timeout=30)
        none = await client.complete(req("fb-none", model="primary", fallbacks=[]), timeout=30)
    assert configured.status == "ok" and configured.model == "secondary" and configured.provider == "anthropic"
    assert [(a.model, a.error_code) for a in configured.attempts] == [
        ("primary", ErrorCode.AUTH_ERROR), ("secondary", None)]
    assert configured.routing.fallbacks == ["secondary"] and configured.routing.fallbacks_source == "catalog"

    assert given.status == "ok" and given.model == "tertiary", given.error
    assert [a.model for a in given.attempts][-1:] == ["tertiary"] and "secondary" not in [
        a.model for a in given.attempts]  # the request's fallbacks replaced the configured ones
    assert given.routing.fallbacks == ["tertiary"] and given.routing.fallbacks_source == "request"

    assert none.status == "error" and {a.model for a in none.attempts} <= {"primary"}
    assert none.routing.fallbacks == [] and none.routing.fallbacks_source is None
    calls = Counter(c["model"] for c in await sim.requests())
    assert calls["claude-haiku-4-5"] == 1 and calls["gpt-4o"] == 1
