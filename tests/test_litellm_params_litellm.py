"""A deployment's pass-through `litellm_params` reach LiteLLM's real provider code (and the wire):
through `LiteLLMProvider` to the session simulator, from a LiteLLM Proxy config loaded as our catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.catalog import Catalog, load_catalog
from pipeline.contracts.models import CompletionRequest, ErrorCode, ReplyStatus
from pipeline.simulator import SimulatorClient
from pipeline.stages.call import CallContext, call_with_fallback
from pipeline.stages.reply import build_reply, usage_events
from pipeline.stages.route import RoutePlan, plan_route

CREDENTIAL = "az-SECRET-token-value-42"


@pytest.fixture
def catalog(simulator: Any, tmp_path: Path) -> Catalog:
    config = {"model_list": [
        # No provider prefix: custom_llm_provider says how LiteLLM calls it.
        {"model_name": "house", "litellm_params": {
            "model": "house-model", "custom_llm_provider": "openai", "api_base": f"{simulator.url}/v1",
            "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}},
        {"model_name": "eu-gpt", "litellm_params": {
            "model": "azure/eu-gpt4o-deployment", "api_base": simulator.url, "api_version": "2024-10-21",
            "api_key": "os.environ/H1_AZURE_KEY"},
         "model_info": {"base_model": "azure/gpt-4o"}},
        {"model_name": "eu-gpt-entra", "litellm_params": {
            "model": "azure/eu-gpt4o-deployment", "api_base": simulator.url, "api_version": "2024-10-21",
            "azure_ad_token": "os.environ/H1_AZURE_AD_TOKEN"},
         "model_info": {"base_model": "azure/gpt-4o"}},
    ]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return load_catalog(tmp_path)


def request(model: str) -> CompletionRequest:
    return CompletionRequest.model_validate({"request_id": f"params-{model}", "task_type": "chat", "model": model,
                                             "cache": False, "messages": [{"role": "user", "content": "hello"}]})


async def call(catalog: Catalog, litellm_provider: Any, model: str) -> tuple[Any, Any]:
    req = request(model)
    plan = plan_route(req, catalog)
    assert isinstance(plan, RoutePlan)
    outcome = await call_with_fallback(req, plan, CallContext(litellm_provider, 10))
    return build_reply(req, plan, outcome, 1.0), usage_events(req, plan, outcome)


async def test_custom_llm_provider_calls_an_unprefixed_model_over_the_openai_wire(
    catalog: Catalog, sim: SimulatorClient, litellm_provider: Any,
) -> None:
    reply, (event,) = await call(catalog, litellm_provider, "house")
    assert reply.status is ReplyStatus.OK, reply.error
    (entry,) = await sim.requests()
    assert (entry["api"], entry["path"], entry["model"]) == ("openai", "/v1/chat/completions", "house-model")
    assert reply.provider == event.provider == "openai"


async def test_azure_api_version_and_key_go_through_to_the_azure_wire(
    catalog: Catalog, sim: SimulatorClient, litellm_provider: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("H1_AZURE_KEY", "az-key-1")
    reply, (event,) = await call(catalog, litellm_provider, "eu-gpt")
    assert reply.status is ReplyStatus.OK, reply.error
    (entry,) = await sim.requests()
    assert (entry["api"], entry["deployment"], entry["api_version"]) == ("azure", "eu-gpt4o-deployment", "2024-10-21")
    assert entry["key_header"] == "api-key"
    assert reply.provider == event.provider == "azure" and event.deployment == "eu-gpt"


async def test_a_credential_parameter_is_resolved_at_call_time_and_never_shown(
    catalog: Catalog, sim: SimulatorClient, litellm_provider: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("H1_AZURE_AD_TOKEN", raising=False)
    reply, _ = await call(catalog, litellm_provider, "eu-gpt-entra")
    assert reply.status is ReplyStatus.ERROR and reply.error is not None
    assert reply.error.code is ErrorCode.AUTH_ERROR and "H1_AZURE_AD_TOKEN" in reply.error.message
    assert await sim.requests() == []  # nothing was sent without it
    monkeypatch.setenv("H1_AZURE_AD_TOKEN", CREDENTIAL)
    reply, _ = await call(catalog, litellm_provider, "eu-gpt-entra")
    assert reply.status is ReplyStatus.OK, reply.error
    (entry,) = await sim.requests()
    assert entry["key_header"] == "authorization"  # the Entra ID token went as a bearer token
    assert CREDENTIAL not in reply.model_dump_json()
