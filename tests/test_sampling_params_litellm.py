"""The OpenAI chat parameters through `LiteLLMProvider` and LiteLLM's real provider code to the
session simulator (config/models.yaml's sim-* entries): what each wire format received (the
simulator's request log), `n` choices priced for all of them, and `drop_params` per model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.catalog import Catalog, load_catalog
from pipeline.contracts.models import CompletionRequest, ErrorCode, ReplyStatus
from pipeline.simulator import SimulatorClient
from pipeline.stages.call import CallContext, call_with_fallback
from pipeline.stages.cost import call_cost
from pipeline.stages.reply import build_reply
from pipeline.stages.route import RoutePlan, plan_route
from pipeline.transport.provider import ProviderError

REPO = Path(__file__).resolve().parents[1]
COMPLETION_TOKENS = 12


@pytest.fixture
async def catalog(simulator: Any, sim: SimulatorClient) -> Catalog:
    await sim.configure(completion_tokens=COMPLETION_TOKENS, latency_ms=0)
    return load_catalog(REPO / "config")  # after the session simulator set PIPELINE_SIMULATOR_URL


def request(**kw: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({
        "request_id": "sampling-1", "task_type": "summarize", "cache": False,
        "messages": [{"role": "user", "content": "say something"}], **kw})


async def received(simulator: Any) -> int:
    async with httpx.AsyncClient(base_url=simulator.url) as client:
        return int((await client.get("/health")).json()["requests"])


async def test_openai_wire_gets_every_parameter_and_n_choices_priced_for_all(
    catalog: Catalog, sim: SimulatorClient, litellm_provider: Any,
) -> None:
    req = request(model="sim-gpt-4o-mini", top_p=0.8, stop=["END"], seed=7, presence_penalty=0.5,
                  frequency_penalty=-0.5, logit_bias={"50256": -100}, logprobs=True, top_logprobs=2,
                  user="end-user-1", service_tier="flex", n=2, extra_body={"guided_regex": "[a-z]+"})
    plan = plan_route(req, catalog)
    assert isinstance(plan, RoutePlan)
    outcome = await call_with_fallback(req, plan, CallContext(litellm_provider, 5))
    reply = build_reply(req, plan, outcome, 1.0)
    (entry,) = await sim.requests()
    assert entry["params"] == {"top_p": 0.8, "stop": ["END"], "seed": 7, "presence_penalty": 0.5,
                               "frequency_penalty": -0.5, "logit_bias": {"50256": -100}, "logprobs": True,
                               "top_logprobs": 2, "service_tier": "flex", "n": 2}
    assert entry["user"] == "end-user-1" and "guided_regex" in entry["body_keys"]  # extra_body merged into the body
    assert reply.status is ReplyStatus.OK, reply.error
    assert reply.choices is not None and len(reply.choices) == 2
    assert reply.content == reply.choices[0].content and reply.choices[1].content != reply.content
    assert reply.choices[1].content is not None and reply.choices[1].content.startswith("sim reply #2 from")
    assert reply.usage.completion_tokens == entry["completion_tokens"] == 2 * COMPLETION_TOKENS
    spec = catalog.models["sim-gpt-4o-mini"]
    assert reply.cost_usd == pytest.approx(call_cost(spec, reply.usage.prompt_tokens, 2 * COMPLETION_TOKENS))
    # logprobs: true came back, per choice, with top_logprobs alternatives each.
    tokens = reply.logprobs["content"]
    assert [t["token"] for t in tokens] == reply.content.split()
    assert all(len(t["top_logprobs"]) == 2 and t["logprob"] < 0 for t in tokens)
    assert reply.choices[1].logprobs["content"][0]["token"] == "sim"


async def test_anthropic_wire_gets_the_parameters_it_has(
    catalog: Catalog, sim: SimulatorClient, litellm_provider: Any,
) -> None:
    deployment = catalog.models["sim-claude-haiku"].deployments[0]
    response = await litellm_provider.complete(
        deployment, request(top_p=0.5, stop="STOP", user="end-user-2", extra_body={"top_k": 20}), timeout_s=5)
    (entry,) = await sim.requests()
    assert entry["api"] == "anthropic"
    assert entry["params"]["top_p"] == 0.5 and entry["params"]["stop_sequences"] == ["STOP"]
    assert entry["params"]["top_k"] == 20  # extra_body: LiteLLM puts extra keys in Anthropic's body
    assert entry["metadata"] == {"user_id": "end-user-2"}
    assert response.completion_tokens == COMPLETION_TOKENS and response.choices == ()


async def test_ollama_wire_gets_them_as_options(catalog: Catalog, sim: SimulatorClient, litellm_provider: Any) -> None:
    deployment = catalog.models["sim-llama"].deployments[0]
    await litellm_provider.complete(deployment, request(top_p=0.25, seed=3, stop=["x", "y"]), timeout_s=5)
    (entry,) = await sim.requests()
    assert {k: entry["params"][k] for k in ("top_p", "seed", "stop")} == {"top_p": 0.25, "seed": 3, "stop": ["x", "y"]}


async def test_an_unsupported_parameter_is_one_bad_request_attempt_unless_the_model_drops_it(
    catalog: Catalog, simulator: Any, sim: SimulatorClient, litellm_provider: Any,
) -> None:
    """Anthropic has no `seed`: without drop_params LiteLLM refuses before sending, and the chain
    stops at once with bad_request (no retry, no fallback); with it the seed is left out."""
    req = request(model="sim-claude-haiku", seed=1, presence_penalty=1)
    plan = plan_route(req, catalog)
    assert isinstance(plan, RoutePlan)
    before = await received(simulator)
    outcome = await call_with_fallback(req, plan, CallContext(litellm_provider, 5))
    reply = build_reply(req, plan, outcome, 1.0)
    assert reply.status is ReplyStatus.ERROR and reply.error is not None
    assert reply.error.code is ErrorCode.BAD_REQUEST and len(reply.attempts) == 1
    assert "does not support parameters" in reply.error.message and "drop_params: true" in reply.error.message
    assert await received(simulator) == before  # nothing was sent

    dropping = catalog.models["sim-claude-haiku"].deployments[0].model_copy(update={"drop_params": True})
    response = await litellm_provider.complete(dropping, req, timeout_s=5)
    assert response.content
    (entry,) = await sim.requests()
    assert "seed" not in entry["body_keys"] and "presence_penalty" not in entry["body_keys"]


async def test_reasoning_effort_on_a_model_without_reasoning_is_a_bad_request(
    catalog: Catalog, sim: SimulatorClient, litellm_provider: Any,
) -> None:
    deployment = catalog.models["sim-gpt-4o-mini"].deployments[0]
    with pytest.raises(ProviderError) as info:
        await litellm_provider.complete(deployment, request(reasoning_effort="low"), timeout_s=5)
    assert info.value.code is ErrorCode.BAD_REQUEST and "reasoning_effort" in info.value.message
    assert await sim.requests() == []
