"""Integration: a LiteLLM config's context_window_fallbacks / content_policy_fallbacks, end to end
through LiteLLM's own error mapping (the session simulator answers as OpenAI and Anthropic do)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.catalog import Catalog, load_catalog
from pipeline.contracts.models import CompletionRequest, ErrorCode
from pipeline.simulator import FaultRule, SimulatorClient
from pipeline.stages.call import CallContext, CallOutcome, call_with_fallback
from pipeline.stages.route import RoutePlan, plan_route
from pipeline.transport.llm import LiteLLMProvider


@pytest.fixture
def catalog(simulator: Any, tmp_path: Path) -> Catalog:
    def entry(name: str, model: str, base: str) -> dict[str, Any]:
        return {"model_name": name, "litellm_params": {"model": model, "api_base": base}}

    config = {
        "model_list": [entry("small", "openai/gpt-4o-mini", f"{simulator.url}/v1"),
                       entry("big", "openai/gpt-4o", f"{simulator.url}/v1"),
                       entry("claude", "anthropic/claude-haiku-4-5", simulator.url)],
        "router_settings": {"num_retries": 0, "context_window_fallbacks": [{"small": ["claude"]}],
                            "content_policy_fallbacks": [{"small": ["big"]}]},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return load_catalog(tmp_path)


async def call(catalog: Catalog) -> CallOutcome:
    request = CompletionRequest.model_validate({
        "request_id": "cond-1", "task_type": "chat", "model": "small", "cache": False,
        "messages": [{"role": "user", "content": "hi"}]})
    plan = plan_route(request, catalog)
    assert isinstance(plan, RoutePlan) and [c.spec.name for c in plan.candidates] == ["small", "claude", "big"]
    provider = LiteLLMProvider()
    try:
        return await call_with_fallback(request, plan, CallContext(provider, 5, rng=random.Random(1)))
    finally:
        await provider.aclose()


@pytest.mark.parametrize(("fault", "code", "served", "passed_over"), [
    # No model_info: the windows are unknown, and a context-window fallback is still tried (as LiteLLM does).
    ("context_length", ErrorCode.CONTEXT_WINDOW_EXCEEDED, "claude", []),
    ("content_policy", ErrorCode.CONTENT_POLICY, "big", ["claude"]),
])
async def test_each_narrow_list_answers_only_its_kind_of_failure(
    catalog: Catalog, sim: SimulatorClient, fault: str, code: ErrorCode, served: str, passed_over: list[str],
) -> None:
    await sim.set_rules([FaultRule(fault=fault, model="gpt-4o-mini")])  # type: ignore[arg-type]
    outcome = await call(catalog)
    assert [(a.spec.name, a.error.code if a.error else None) for a in outcome.attempts] == [
        ("small", code), (served, None)]
    assert [p.model for p in outcome.passed_over] == passed_over


async def test_a_server_error_tries_neither_narrow_list(catalog: Catalog, sim: SimulatorClient) -> None:
    await sim.set_rules([FaultRule(fault="server_error", model="gpt-4o-mini")])
    outcome = await call(catalog)
    assert [(a.spec.name, a.error.code if a.error else None) for a in outcome.attempts] == [
        ("small", ErrorCode.SERVER_ERROR)]
    assert [p.model for p in outcome.passed_over] == ["claude", "big"] and outcome.answer is None
    assert len(await sim.requests()) == 1
