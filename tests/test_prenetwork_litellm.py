"""Integration: a request LiteLLM refuses before sending, through the worker's provider and call stage.

The session simulator stands for every provider (config/models.yaml's sim-* entries); its request
counter (`/health`) and request log prove that nothing reached it. Before the fix these requests
came back as `connection_error`: retried on the same model, then on the fallbacks, each attempt
counted toward the deployment's cooldown.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.catalog import Catalog, load_catalog
from pipeline.contracts.models import AttemptOutcome, CompletionRequest, ErrorCode
from pipeline.simulator import FaultRule, SimulatorClient
from pipeline.stages.call import CallContext, call_with_fallback
from pipeline.stages.deployments import DeploymentPool
from pipeline.stages.reply import build_reply
from pipeline.stages.route import RoutePlan, plan_route
from pipeline.state.health import InProcessHealth
from pipeline.transport.llm import LiteLLMProvider
from pipeline.transport.provider import ProviderError, StreamLimits

REPO = Path(__file__).resolve().parents[1]
UNKNOWN_PART = [{"role": "user", "content": [{"type": "banana", "banana": "x"}]}]  # every wire format refuses it
TOOL_CALL_WITHOUT_FUNCTION = [  # the Ollama formats refuse it (KeyError 'function')
    {"role": "user", "content": "what is six times seven"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function"}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "42"},
]


class RecordingHealth(InProcessHealth):
    """In-process health state that remembers every failure counted toward a cooldown."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[str] = []

    async def record_failure(self, deployment: str, *, allowed_fails: int, window_s: float, cooldown_s: float) -> bool:
        self.failures.append(deployment)
        return await super().record_failure(deployment, allowed_fails=allowed_fails, window_s=window_s,
                                            cooldown_s=cooldown_s)


@pytest.fixture
async def catalog(simulator: Any) -> Catalog:
    return load_catalog(REPO / "config")  # after the session simulator set PIPELINE_SIMULATOR_URL


@pytest.fixture
async def arrivals(simulator: Any, sim: SimulatorClient) -> AsyncIterator[Any]:
    """Call it for the number of requests the simulator received since the test began."""
    async with httpx.AsyncClient(base_url=simulator.url) as client:
        async def count() -> int:
            return int((await client.get("/health")).json()["requests"])

        start = await count()

        async def since() -> int:
            return await count() - start

        yield since


def request(messages: list[dict[str, Any]], **kw: Any) -> CompletionRequest:
    return CompletionRequest.model_validate(
        {"request_id": "prenet-1", "task_type": "classify", "messages": messages, "cache": False, **kw})


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(("model", "messages"), [
    ("sim-gpt-4o-mini", UNKNOWN_PART),
    ("sim-claude-haiku", UNKNOWN_PART),
    ("sim-llama", UNKNOWN_PART),
    ("sim-llama", TOOL_CALL_WITHOUT_FUNCTION),
], ids=["openai-unknown-part", "anthropic-unknown-part", "ollama_chat-unknown-part", "ollama_chat-tool-call"])
async def test_provider_reports_bad_request_and_sends_nothing(
    catalog: Catalog, sim: SimulatorClient, arrivals: Any, model: str, messages: list[dict[str, Any]], stream: bool,
) -> None:
    provider = LiteLLMProvider()
    deployment = catalog.models[model].deployments[0]
    deltas: list[str] = []

    async def sink(delta: str) -> None:
        deltas.append(delta)

    try:
        with pytest.raises(ProviderError) as info:
            await provider.complete(deployment, request(messages), timeout_s=5, on_delta=sink if stream else None,
                                    stream_limits=StreamLimits(5, 5) if stream else None)
    finally:
        await provider.aclose()
    error = info.value
    assert error.code is ErrorCode.BAD_REQUEST, error.message
    assert error.message.startswith("request rejected by LiteLLM before sending"), error.message
    assert error.status is None and not error.after_output and deltas == []
    assert await arrivals() == 0 and await sim.requests() == []


async def test_call_stage_makes_one_attempt_and_counts_no_failure(
    catalog: Catalog, sim: SimulatorClient, arrivals: Any
) -> None:
    """Route `classify` is [sim-llama, sim-gpt-4o-mini]: the request stops at the first attempt,
    with no retry, no fallback and no failure recorded against the deployment."""
    req = request(TOOL_CALL_WITHOUT_FUNCTION)
    plan = plan_route(req, catalog)
    assert isinstance(plan, RoutePlan) and [c.spec.name for c in plan.candidates] == ["sim-llama", "sim-gpt-4o-mini"]
    health = RecordingHealth()
    ctx = CallContext(LiteLLMProvider(), 5, pool=DeploymentPool(health), rng=random.Random(1))
    outcome = await call_with_fallback(req, plan, ctx)
    (attempt,) = outcome.attempts
    assert attempt.spec.name == "sim-llama" and attempt.error is not None
    assert attempt.error.code is ErrorCode.BAD_REQUEST and outcome.stopped
    assert health.failures == []
    assert await health.cooling_down([d.name for c in plan.candidates for d in c.spec.deployments]) == {}
    assert await arrivals() == 0
    reply = build_reply(req, plan, outcome, 1.0)
    assert reply.error is not None and reply.error.code is ErrorCode.BAD_REQUEST
    assert [(a.model, a.outcome, a.error_code) for a in reply.attempts] == [
        ("sim-llama", AttemptOutcome.ERROR, ErrorCode.BAD_REQUEST)]


async def test_a_provider_fault_is_still_counted_and_falls_back(
    catalog: Catalog, sim: SimulatorClient, arrivals: Any
) -> None:
    """The same route and bookkeeping with a deployment fault (a 500 from sim-llama): the failure
    is recorded against sim-llama and the request falls back to sim-gpt-4o-mini, which answers."""
    await sim.set_rules([FaultRule(fault="server_error", model="llama3.1")])
    req = request([{"role": "user", "content": "classify this"}])
    plan = plan_route(req, catalog)
    assert isinstance(plan, RoutePlan)
    health = RecordingHealth()
    policy = plan.candidates[0].spec.resilience
    ctx = CallContext(LiteLLMProvider(), 5, pool=DeploymentPool(health), rng=random.Random(1))
    outcome = await call_with_fallback(req, plan, ctx)
    assert outcome.answer is not None and outcome.answer.spec.name == "sim-gpt-4o-mini"
    llama = [a for a in outcome.attempts if a.spec.name == "sim-llama"]
    assert llama and all(a.error is not None and a.error.code is ErrorCode.SERVER_ERROR for a in llama)
    assert len(llama) == policy.rule("server_error").retries + 1
    assert health.failures == ["sim-llama"] * len(llama)
    assert await arrivals() == len(outcome.attempts)
